"""Servers under test, each a subprocess on a free loopback port: nbllm, llama_cpp.server, llama-server."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.env import Peer


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss(pid: int) -> tuple[int, int]:
    """(current, peak) resident memory of a process, bytes."""
    values = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) * 1024
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def cpu(pid: int) -> tuple[float, dict[str, float]]:
    """CPU seconds of a process (threads that ended included) and of each of its live threads."""
    tick = os.sysconf("SC_CLK_TCK")

    def seconds(stat: Path) -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            threads[task.name] = seconds(task / "stat")
    return seconds(Path(f"/proc/{pid}/stat")), threads


@dataclass
class Server:
    """A running server process."""

    name: str
    kind: str
    """``ollama`` (NDJSON /api/generate), ``openai`` (/v1/completions) or ``llama`` (llama-server /completion)."""
    url: str
    proc: subprocess.Popen[bytes]
    started: float
    ready_s: float = 0.0
    model: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    def memory(self) -> tuple[int, int]:
        """(current, peak) RSS."""
        return rss(self.proc.pid)

    def cpu(self) -> tuple[float, dict[str, float]]:
        """CPU seconds of the process and of each live thread (by thread id)."""
        return cpu(self.proc.pid)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], path: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server at {url} exited with {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server at {url} not ready after {timeout}s")


def _start(name: str, kind: str, cmd: list[str], env: dict[str, str], port: int, ready_path: str, log: Path) -> Server:
    started = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, ready_path)
    except BaseException:
        proc.kill()
        raise
    return Server(name=name, kind=kind, url=url, proc=proc, started=started, ready_s=time.monotonic() - started)


def nbllm(store: Path, *, parallel: int, threads: int, log: Path, module: str = "nbllm") -> Server:
    """``nbllm serve`` over a model store (``python -m module serve``: a bench variant may wrap it)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBLLM_", "OLLAMA_"))}
    env.update(
        {
            "OLLAMA_HOST": f"127.0.0.1:{port}",
            "NBLLM_MODELS": str(store),
            "OLLAMA_NUM_PARALLEL": str(parallel),
            "OLLAMA_KEEP_ALIVE": "-1",
            "NBLLM_HOME": str(store.parent / "home"),
            "OLLAMA_NOPRUNE": "1",
        }
    )
    server = _start(f"nbllm (np={parallel})", "ollama", [sys.executable, "-m", module, "serve"], env, port, "/", log)
    server.extra.update(threads=threads, parallel=parallel)
    return server


def llama_cpp_server(peer: Peer, model: Path, *, n_ctx: int, threads: int, log: Path) -> Server:
    """``python -m llama_cpp.server`` (one request at a time).

    Its default ``interrupt_requests=True`` aborts a running stream when another request arrives, which
    turns the concurrency test into dropped connections; queueing them is its best setting for that test.
    """
    port = free_port()
    cmd = [
        str(peer.python),
        str(Path(__file__).with_name("plain_buffers.py")),  # (on an AMX CPU, the weights as nbllm keeps them)
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--model_alias",
        "m",
        "--verbose",
        "False",
        "--interrupt_requests",
        "False",
    ]
    return _start("llama-cpp-python server", "openai", cmd, peer.env(), port, "/v1/models", log)


def amx_host() -> bool:
    """Whether this CPU has AMX: natively built llama.cpp then has ggml's AMX kernels, which crash in the
    builds here (``nbllm.engine.llama.native.amx_kernels``), so the peers keep weights out of them as nbllm does."""
    try:
        return " amx_int8" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def llama_server(
    peer: Peer,
    model: Path,
    *,
    n_ctx: int,
    parallel: int,
    threads: int,
    log: Path,
    gpu_layers: int = 0,
    extra: tuple[str, ...] = (),
) -> Server:
    """llama.cpp's C++ ``llama-server`` with ``-np`` slots (context ``n_ctx`` per slot), ``gpu_layers`` offloaded."""
    assert peer.bin_dir is not None
    port = free_port()
    cmd = [
        str(peer.bin_dir / "llama-server"),
        "-m",
        str(model),
        "-c",
        str(n_ctx * parallel),
        "-np",
        str(parallel),
        "-t",
        str(threads),
        "-tb",
        str(threads),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "-ngl",
        str(gpu_layers),
        "--no-webui",
        *(["--no-repack"] if amx_host() else []),  # (no extra buffer types: see amx_host)
        *extra,
    ]
    server = _start(
        f"llama-server (np={parallel}){' ' + ' '.join(extra) if extra else ''}",
        "llama",
        cmd,
        peer.env(),
        port,
        "/health",
        log,
    )
    server.extra.update(parallel=parallel)
    return server


@contextlib.contextmanager
def checkout(tree: Path | None) -> Iterator[None]:
    """Servers started inside run ``tree``'s code (``PYTHONPATH``, and its directory as the working one: ``python
    -m`` puts the working directory first on the path); None: this checkout's."""
    if tree is None:
        yield
        return
    saved, here = os.environ.get("PYTHONPATH"), Path.cwd()
    os.environ["PYTHONPATH"] = str(tree)
    os.chdir(tree)
    try:
        yield
    finally:
        os.chdir(here)
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    """Stop the server when done."""
    try:
        yield server
    finally:
        server.stop()
