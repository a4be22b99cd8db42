"""``nbllm serve``: the API server in the foreground; Ctrl-C or SIGTERM stops it and unloads every model."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from typing import Any

from nbllm.cli.main import cli
from nbllm.errors import NbllmError

__all__ = ["serve"]

SERVE_ENV = (
    "OLLAMA_DEBUG",
    "OLLAMA_HOST",
    "OLLAMA_KEEP_ALIVE",
    "OLLAMA_MAX_LOADED_MODELS",
    "OLLAMA_MAX_QUEUE",
    "OLLAMA_MODELS",
    "OLLAMA_NUM_PARALLEL",
    "OLLAMA_NOPRUNE",
    "OLLAMA_ORIGINS",
    "OLLAMA_SCHED_SPREAD",
    "OLLAMA_TMPDIR",
    "OLLAMA_FLASH_ATTENTION",
    "OLLAMA_KV_CACHE_TYPE",
    "OLLAMA_LLM_LIBRARY",
    "OLLAMA_GPU_OVERHEAD",
    "OLLAMA_LOAD_TIMEOUT",
    "OLLAMA_CONTEXT_LENGTH",
    "NBLLM_HOME",
    "NBLLM_PACKAGE_INDEX",
    "NBLLM_API_KEY",
    "NBLLM_MAX_REQUEST_SIZE",
    "NBLLM_METRICS",
    "NBLLM_HEADER_TIMEOUT",
    "NBLLM_MAX_CONNECTIONS",
    "NBLLM_KV_CACHE_RAM",
    "NBLLM_KV_SNAPSHOTS",
    "NBLLM_KV_SNAPSHOTS_MAX",
)


def _listen(host: str, port: int) -> socket.socket:
    """Bind first, so that a busy port is a one-line error as in Ollama."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise NbllmError(f"listen tcp {host}:{port}: bind: {(exc.strerror or str(exc)).lower()}") from None
    return sock


@cli.command(use="serve", aliases=("start",), env=SERVE_ENV)
def serve() -> None:
    """Start nbllm."""
    from nbllm.config import Settings
    from nbllm.runtime import Runtime
    from nbllm.server import create_app
    from nbllm.server.connections import uvicorn_config

    settings = Settings.from_env()
    level = logging.DEBUG if settings.debug else logging.INFO
    fmt = "time=%(asctime)s level=%(levelname)s source=%(name)s msg=%(message)s"
    logging.basicConfig(level=level, format=fmt, force=True)
    logging.getLogger("httpx").setLevel(level if settings.debug else logging.WARNING)  # no line per pulled file
    sock = _listen(settings.host.bind_host, settings.host.port)
    runtime = Runtime.from_settings(settings)
    log = logging.getLogger("nbllm.serve")
    log.info("server config %s", settings.model_dump(mode="json"))
    log.info("Listening on %s:%d (version %s)", settings.host.bind_host, sock.getsockname()[1], runtime.version)
    # uvicorn handles SIGINT/SIGTERM: it stops accepting, lets requests finish (10 s at most), then
    # runs the app's lifespan shutdown, which unloads every model, and returns.
    app = create_app(runtime, close_runtime=True, listen_host=settings.host.bind_host)
    config = uvicorn_config(
        app,
        head_timeout=settings.header_timeout,
        max_connections=settings.max_connections,
        log_config=None,
        access_log=settings.debug > 0,
        timeout_graceful_shutdown=10,
    )
    _foreground_server(config).run(sockets=[sock])


def _foreground_server(config: Any) -> Any:
    """A uvicorn server for which SIGINT/SIGTERM mean "shut down cleanly, exit 0" (as ``ollama serve``).

    uvicorn re-raises the signal after its graceful shutdown, which would end the process with
    status 130 or by SIGTERM; a stop asked for is a success for systemd and for the user.
    """

    import uvicorn

    class ForegroundServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            handled = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return ForegroundServer(config)
