"""BackgroundServer: the API server in a daemon thread of this process (the notebook's server)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import socket
import threading
import time

import uvicorn

from nbllm.errors import NbllmError
from nbllm.runtime import Runtime
from nbllm.server.app import create_app
from nbllm.server.connections import uvicorn_config

__all__ = ["BackgroundServer"]

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:
        """Signals belong to the main thread's owner (the kernel), not to us."""


class BackgroundServer:
    """Serve ``runtime`` on ``host:port`` from a daemon thread; ``port=0`` picks a free port.

    ``start()`` and ``stop()`` are idempotent; the socket is bound in ``start()`` so that an
    address already in use is reported to the caller at once.
    """

    def __init__(self, runtime: Runtime, host: str = "127.0.0.1", port: int = 0) -> None:
        self.runtime = runtime
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        """Bind, start serving, and wait until requests are accepted."""
        if self.running:
            return self
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise NbllmError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None
        self.port = sock.getsockname()[1]
        app = create_app(self.runtime, listen_host=self.host)
        settings = self.runtime.settings
        config = uvicorn_config(
            app,
            head_timeout=settings.header_timeout,
            max_connections=settings.max_connections,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self._server = _Server(config)
        self._error = None
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="nbllm-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise NbllmError(f"server failed to start: {self._error}")
            if time.monotonic() > deadline:
                self.stop()
                raise NbllmError("server did not start in time")
            time.sleep(0.01)
        atexit.register(self.stop)
        log.info("nbllm server listening on %s", self.url)
        return self

    def _serve(self, sock: socket.socket) -> None:
        assert self._server is not None
        try:
            self._server.run(sockets=[sock])
        except BaseException as exc:  # SystemExit from uvicorn's startup included
            self._error = exc
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread (models stay loaded in the runtime)."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        self._server = None
        self._thread = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
