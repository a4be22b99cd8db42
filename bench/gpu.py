"""``python3 -m bench.gpu``: nbllm against llama-server on one NVIDIA GPU, from what ``bench.gpu_carry`` packed.

Made for a machine with a GPU, CUDA's compiler, CMake, ninja, Python 3.12 and no internet, that receives the
working tree and ``bench/.gpu-carry/`` (prepare it with ``python -m bench.gpu_carry``):

1. the carried wheels go into ``<work>/site`` (pip, offline);
2. llama.cpp is built once from the carried source, CUDA for this GPU's architecture only (``bench/gpu_build.py``):
   ``libllama.so`` for nbllm through llama-cpp-python's pure-Python package (``LLAMA_CPP_LIB_PATH``) and
   ``llama-server`` from the same code;
3. the model is made from its carried header (``bench/gpu_model.py``: SmolLM2-135M Q4_1's layout, made-up weights);
4. nbllm (``OLLAMA_NUM_PARALLEL=8``) and llama-server (``-np 8``, every layer on the GPU) serve it side by side;
   in alternating rounds (``bench/workloads.py``'s method): one client's decode rate, 8 clients' aggregate rate,
   and the time to first token of a fresh ~2k-token prompt against each server's own prefill time; then
   ``/api/ps``'s PROCESSOR and ``size_vram``;
5. the report: ``<out>/<date>-gpu.md`` and ``.json`` (median ratios with their 95% CI).

``--dry-run`` checks the carry and prints the plan without building or serving; ``--cpu`` builds without CUDA
(a rehearsal of the whole flow on a machine without a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import gpu_build, gpu_model

REPO = Path(__file__).resolve().parents[1]
CARRY = REPO / "bench" / ".gpu-carry"
MODEL = "bench-smollm2:135m"
GEMMA = "bench-gemma3:270m"


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m bench.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--carry", type=Path, default=CARRY, help="what bench.gpu_carry packed")
    p.add_argument("--work", type=Path, default=Path("/tmp/nbllm-gpu"), help="build and scratch folder")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="where the report goes")
    p.add_argument("--rounds", type=int, default=21, help="alternating rounds of each measurement")
    p.add_argument("--tokens", type=int, default=256, help="tokens per decode request")
    p.add_argument("--parallel", type=int, default=8, help="slots of both servers (and clients of the batch test)")
    p.add_argument("--ctx", type=int, default=4096, help="context per slot")
    p.add_argument("--cpu", action="store_true", help="build without CUDA (rehearsal)")
    p.add_argument("--dry-run", action="store_true", help="check the carry and print the plan only")
    p.add_argument("--profile-s", type=float, default=8.0, help="seconds py-spy samples nbllm's threads (0: none)")
    p.add_argument("--name", default="", help="the report's file name without suffix (default: <date>-gpu)")
    return p.parse_args(argv)


def check_carry(carry: Path) -> list[str]:
    """What is missing from the carry (nothing: an empty list)."""
    need = ["llama.cpp.tar.gz", "model-header.gguf", "model-header.json"]
    missing = [n for n in need if not (carry / n).is_file()]
    if not any((carry / "wheels").glob("*.whl")):
        missing.append("wheels/*.whl")
    return missing


def _extra_models(a: argparse.Namespace) -> dict[str, dict[str, str]]:
    """Models loaded only to check ``ps`` (Gemma 3 270M, when its header was carried)."""
    head = a.carry / "gemma-header.gguf"
    return {GEMMA: {"header": str(head), "file": str(a.work / "gemma.gguf")}} if head.is_file() else {}


def plan(a: argparse.Namespace) -> dict[str, Any]:
    """Every step this run takes, as data (what ``--dry-run`` prints and the test checks)."""
    build_dir = a.work / ("build-cpu" if a.cpu else "build-cuda")
    source = a.work / "llama.cpp"
    wheels = sorted(p.name for p in (a.carry / "wheels").glob("*.whl"))
    return {
        "carry": str(a.carry),
        "missing": check_carry(a.carry),
        "wheels": wheels,
        "install": [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            "--target",
            str(a.work / "site"),
            *(str(a.carry / "wheels" / w) for w in wheels),
        ],
        "configure": gpu_build.configure_args(source, build_dir, cuda=not a.cpu),
        "build": gpu_build.build_args(build_dir, os.cpu_count() or 2),
        "env": {
            "PYTHONPATH": os.pathsep.join([str(a.work / "site"), str(REPO), str(a.work / "python")]),
            "LLAMA_CPP_LIB_PATH": str(build_dir / "bin"),
        },
        # speculation off: the made-up weights repeat one token, which prompt lookup drafts perfectly
        # (2026-12-04: 1.74x llama-server at one client, all of it speculation); both servers decode plainly
        "model": {
            "header": str(a.carry / "model-header.gguf"),
            "file": str(a.work / "model.gguf"),
            "params": {"draft_num_predict": 0},
        },
        "extra_models": _extra_models(a),
        "profile": {"tool": "py-spy", "seconds": a.profile_s},
        "servers": {"nbllm": {"OLLAMA_NUM_PARALLEL": a.parallel}, "llama-server": {"-np": a.parallel, "-ngl": 999}},
        "measure": {"rounds": a.rounds, "tokens": a.tokens, "clients": [1, a.parallel], "ttft_prompt_tokens": 2000},
    }


NEEDED = "import pydantic_settings, fastapi, uvicorn, gguf, diskcache, httptools, prompt_toolkit"


def _install(p: dict[str, Any]) -> bool:
    """Install the carried wheels unless this Python has them all already (a rehearsal here); whether it did."""
    if subprocess.run([sys.executable, "-c", NEEDED], capture_output=True, check=False).returncode == 0:
        return False
    subprocess.run(p["install"], check=True)
    return True


def _store(p: dict[str, Any], store: Path) -> Path:
    """Make the models from their headers and put them into an nbllm store (the made-up weights' path)."""
    code = (
        "import json, sys; from pathlib import Path; from nbllm.store import ModelStore; "
        "from tests.support.models import install_model; "
        "install_model(ModelStore(Path(sys.argv[1])), sys.argv[2], Path(sys.argv[3]), params=json.loads(sys.argv[4]))"
    )
    env = {**os.environ, **p["env"]}
    for name, m in {MODEL: p["model"], **p["extra_models"]}.items():
        size = gpu_model.materialize(Path(m["header"]), Path(m["file"]))
        params = json.dumps(m.get("params") or {})
        subprocess.run([sys.executable, "-c", code, str(store), name, m["file"], params], check=True, env=env, cwd=REPO)
        print(f"model {name}: {size / 2**20:.1f} MiB at {m['file']}", flush=True)
    return Path(p["model"]["file"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the GPU check (or, with ``--dry-run``, print its plan)."""
    a = _args(argv)
    p = plan(a)
    if a.dry_run:
        print(json.dumps(p, indent=2))
        return p
    if p["missing"]:
        raise SystemExit(f"missing from {a.carry}: {', '.join(p['missing'])} (run python -m bench.gpu_carry)")
    started = time.monotonic()
    a.work.mkdir(parents=True, exist_ok=True)
    _install(p)
    print("building llama.cpp ...", flush=True)
    build = gpu_build.build(a.carry / "llama.cpp.tar.gz", a.work, cuda=not a.cpu, log=a.work / "build.log")
    print(f"built in {build.seconds:.0f}s: {build.bin_dir}", flush=True)
    os.environ.update(p["env"])
    from bench import gpu_measure  # httpx: after the wheels are in place

    model = _store(p, a.work / "store")
    stamp = a.name or datetime.now(timezone.utc).strftime("%Y-%m-%d") + ("-gpu" if build.cuda else "-gpu-rehearsal-cpu")
    setup = {"build_s": build.seconds, "cuda": build.cuda}

    def save(results: dict[str, Any]) -> None:  # after each stage: a run cut short still leaves a report
        results["setup"] = {**setup, "total_s": time.monotonic() - started}
        path = gpu_measure.write(results, a.out, stamp)
        print(f"report: {path} ({time.monotonic() - started:.0f}s)", flush=True)

    results = gpu_measure.run(a, build, model, a.work / "store", MODEL, extra=list(p["extra_models"]), save=save)
    save(results)
    return results


if __name__ == "__main__":
    main()
