"""Build llama.cpp once from the trimmed source that ``bench.gpu_carry`` packs: ``libllama`` and its tools.

One build gives what both sides need: ``libllama.so`` (and ``libggml*``) for llama-cpp-python through
``LLAMA_CPP_LIB_PATH``, and ``llama-server``, ``llama-bench``, ``llama-batched-bench`` from the same code.
With ``cuda`` the CUDA backend is built for the local GPU's architecture only (``native``), with ninja.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

TARGETS = ("llama", "llama-server", "llama-bench", "llama-batched-bench")


@dataclass(frozen=True)
class Build:
    """A finished build."""

    source: Path
    bin_dir: Path
    """Where the programs and the shared libraries are (CMake's ``bin/``)."""
    seconds: float
    cuda: bool


def configure_args(source: Path, build: Path, *, cuda: bool, arch: str = "native") -> list[str]:
    """The CMake configure command: only the library and the tools, nothing fetched from the network."""
    args = [
        "cmake",
        "-S",
        str(source),
        "-B",
        str(build),
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=ON",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_TOOLS=ON",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DLLAMA_BUILD_APP=OFF",
        "-DLLAMA_BUILD_UI=OFF",
        "-DLLAMA_USE_PREBUILT_UI=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DGGML_NATIVE=ON",
        f"-DGGML_CUDA={'ON' if cuda else 'OFF'}",
    ]
    if cuda:
        args.append(f"-DCMAKE_CUDA_ARCHITECTURES={arch}")
    if shutil.which("ninja"):
        args += ["-G", "Ninja"]
    return args


def build_args(build: Path, jobs: int) -> list[str]:
    """The CMake build command for the four targets."""
    return ["cmake", "--build", str(build), "--config", "Release", "-j", str(jobs), "--target", *TARGETS]


def unpack(tarball: Path, work: Path) -> Path:
    """Unpack the carried tarball under ``work``; return the llama.cpp source folder."""
    work.mkdir(parents=True, exist_ok=True)
    source = work / "llama.cpp"
    if not (source / "CMakeLists.txt").exists():
        with tarfile.open(tarball) as tar:
            tar.extractall(work, filter="data")
    return source


def build(tarball: Path, work: Path, *, cuda: bool, jobs: int | None = None, log: Path | None = None) -> Build:
    """Unpack, configure and build (reusing a finished build under ``work``)."""
    source = unpack(tarball, work)
    out = work / ("build-cuda" if cuda else "build-cpu")
    bin_dir = out / "bin"
    started = time.monotonic()
    if not all((bin_dir / t).exists() for t in TARGETS[1:]):
        jobs = jobs or os.cpu_count() or 2
        with open(log or os.devnull, "ab") as sink:
            for cmd in (configure_args(source, out, cuda=cuda), build_args(out, jobs)):
                subprocess.run(cmd, check=True, stdout=sink, stderr=subprocess.STDOUT)
    return Build(source=source, bin_dir=bin_dir, seconds=time.monotonic() - started, cuda=cuda)
