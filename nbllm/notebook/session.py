"""The notebook's state: the runtime and server it owns, its clients, conversations and timings.

One ``NotebookSession`` belongs to the loaded extension (the magics instance holds it); nothing is
kept at module level. Which backend a magic talks to is decided by :meth:`NotebookSession.client`:

1. ``--host URL`` (or ``%config NbllmMagics.host``): that server, Ollama or nbllm; ``local`` means
   this process; ``openai+URL`` an OpenAI-compatible server (:mod:`nbllm.notebook.openai_client`);
2. else the in-kernel server started with ``%serve``;
3. else the server at ``OLLAMA_HOST`` if one answers there;
4. else, unless ``OLLAMA_HOST`` was set explicitly, this process (a ``LocalClient`` over the
   session's runtime and model store), as the CLI does.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbllm.client import BaseClient, Client, LocalClient
from nbllm.config import Settings
from nbllm.errors import NbllmError, ServerUnreachable
from nbllm.notebook.openai_client import OpenAIClient, is_openai_host
from nbllm.notebook.timing import TimingLog
from nbllm.notebook.tools import ToolCallRecord
from nbllm.schema import Message

if TYPE_CHECKING:
    from nbllm.runtime import Runtime
    from nbllm.server import BackgroundServer

__all__ = ["LOCAL", "NotebookSession", "default_client"]

log = logging.getLogger(__name__)

LOCAL = "local"
"""The ``--host`` value that means "in this process"."""

SERVER_LOGGERS = ("nbllm", "uvicorn")
"""The loggers of the in-kernel server: given a handler of their own, so nothing reaches a cell."""


def default_client(
    settings: Settings, http: Callable[[str], BaseClient], local: Callable[[], BaseClient]
) -> BaseClient:
    """The server at ``settings.host`` if one answers, else ``local()`` unless that host was set explicitly."""
    client = http(settings.host.url)
    if client.heartbeat():
        return client
    if "host" in settings.model_fields_set:
        raise ServerUnreachable(
            f"no server answers at OLLAMA_HOST={settings.host.url}; start one (`%serve`, `nbllm serve`) "
            "or pass --host local to run in this kernel"
        )
    return local()


class NotebookSession:
    """Runtime, in-kernel server, clients, conversation threads, tool calls and timing log of a notebook."""

    def __init__(self, *, settings: Settings | None = None, runtime: Runtime | None = None) -> None:
        self._settings = settings or (runtime.settings if runtime is not None else None)
        self._runtime = runtime
        self._owns_runtime = runtime is None
        self.server: BackgroundServer | None = None
        self.threads: dict[str, list[Message]] = {}
        self.timings = TimingLog()
        self.tool_calls: list[ToolCallRecord] = []
        self.watchers: list[Any] = []
        """Widgets with a background refresh (``%ps --watch``): stopped at close."""
        self.widgets: list[Any] = []
        """Live widgets (tool inspectors): frozen into their static copy at close or kernel shutdown."""
        self._clients: dict[str, Client | OpenAIClient] = {}
        self.api_key_env: str | None = None
        """The variable holding an OpenAI-compatible host's API key (None: ``OPENAI_API_KEY``)."""
        self._lock = threading.RLock()
        self._log_handler: logging.Handler | None = None
        self._log_levels: dict[str, int] = {}
        self._at_exit = False
        self._close_registered = False

    @property
    def settings(self) -> Settings:
        """Settings from the kernel's environment, read once."""
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    @property
    def runtime(self) -> Runtime:
        """The runtime for in-process work and ``%serve`` (built on first use)."""
        with self._lock:
            if self._runtime is None:
                from nbllm.runtime import Runtime

                self._runtime = Runtime.from_settings(self.settings)
                if self.settings.kv_snapshots:
                    self._close_at_exit()
            return self._runtime

    def keep_kv_snapshots(self, model: str) -> bool:
        """Turn KV snapshots on for the runtime this session owns (``--persist``), as ``NBLLM_KV_SNAPSHOTS=1``.

        ``model``, if loaded without them and idle, is unloaded so that its next load keeps and finds
        snapshots. A runtime the session was given is left as it is. True when snapshots are on.
        """
        with self._lock:
            if not self._owns_runtime:
                return self.settings.kv_snapshots
            self._close_at_exit()
            if self.settings.kv_snapshots:
                return True
            self._settings = self.settings.model_copy(update={"kv_snapshots": True})
            if self._runtime is None:
                return True
            self._runtime.settings = self._settings
            runtime = self._runtime
        try:
            runtime.scheduler.expire(runtime.store.get(model))
        except NbllmError:  # not pulled: its request says so
            log.debug("not unloading %s", model, exc_info=True)
        return True

    def _close_at_exit(self) -> None:
        """With snapshots on, a kernel that exits unloads the session's models first: pending writes finish."""
        if not self._close_registered:
            atexit.register(self._close_runtime)
            self._close_registered = True

    def _close_runtime(self) -> None:
        """Unload the models of the runtime this session built (their engines finish pending snapshot writes)."""
        with self._lock:
            runtime, self._runtime = (self._runtime, None) if self._owns_runtime else (None, self._runtime)
        if runtime is not None:
            runtime.close()

    def client(self, host: str | None = None) -> BaseClient:
        """The backend for a magic call (see the module docstring for the order)."""
        if host == LOCAL:
            return LocalClient(self.runtime)
        if host:
            return self._http(host)
        if self.server is not None and self.server.running:
            return self._http(self.server.url)
        return default_client(self.settings, self._http, lambda: LocalClient(self.runtime))

    def _http(self, host: str) -> Client | OpenAIClient:
        key = f"{host} {self.api_key_env}" if is_openai_host(host) else host
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                try:
                    if is_openai_host(host):  # its key from api_key_env, read per request
                        client = OpenAIClient(host, settings=self.settings, api_key_env=self.api_key_env)
                    else:
                        client = Client(host, settings=self.settings)  # sends NBLLM_API_KEY when it is set
                except ValueError as exc:
                    raise NbllmError(f"invalid host {host!r}: {exc}") from None
                self._clients[key] = client
            return client

    def capture_logs(self, path: str | None = None) -> None:
        """Give the server's loggers a handler: ``path`` (appended to), else one that drops records.

        Without a handler of their own, Python's last-resort handler writes warnings and errors to
        stderr, which the kernel shows under whichever cell ran last. The root logger is left alone:
        a handler the user configures there still gets every record.
        """
        with self._lock:
            self.release_logs()
            handler: logging.Handler = logging.NullHandler()
            if path is not None:
                try:
                    handler = logging.FileHandler(path, encoding="utf-8")
                except OSError as exc:
                    raise NbllmError(f"cannot write the server log to {path}: {exc.strerror or exc}") from None
                handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            for name in SERVER_LOGGERS:
                logger = logging.getLogger(name)
                logger.addHandler(handler)
                if path is not None and logger.getEffectiveLevel() > logging.INFO:
                    self._log_levels[name] = logger.level
                    logger.setLevel(logging.INFO)
            self._log_handler = handler

    def release_logs(self) -> None:
        """Remove the handler of :meth:`capture_logs` (closing its file) and restore the loggers' levels."""
        with self._lock:
            handler, self._log_handler = self._log_handler, None
            if handler is None:
                return
            for name in SERVER_LOGGERS:
                logging.getLogger(name).removeHandler(handler)
            for name, level in self._log_levels.items():
                logging.getLogger(name).setLevel(level)
            self._log_levels.clear()
            handler.close()

    def keep(self, widget: Any) -> None:
        """Remember a live widget (``freeze()``, and ``stop()`` for watchers) to end when the kernel stops."""
        with self._lock:
            (self.watchers if hasattr(widget, "stop") else self.widgets).append(widget)
            if not self._at_exit:
                atexit.register(self.end_widgets)
                self._at_exit = True

    def end_widgets(self) -> None:
        """Stop watchers and freeze live widgets, so saved outputs show their static copy without a kernel."""
        with self._lock:
            watchers, self.watchers = list(self.watchers), []
            live, self.widgets = list(self.widgets), []
        for watcher in watchers:
            watcher.stop()
        for widget in live:
            try:
                widget.freeze()
            except Exception:  # a kernel shutting down may have closed its channels already
                log.debug("freezing %r failed", widget, exc_info=True)

    def serve(self, host: str | None = None, port: int | None = None, *, log: str | None = None) -> BackgroundServer:
        """Start the in-kernel server (idempotent while one runs on the same address); ``log``: its log file."""
        from nbllm.server import BackgroundServer

        if log is not None:
            self.capture_logs(log)
        with self._lock:
            bind = host or self.settings.host.bind_host
            want = self.settings.host.port if port is None else port
            if self.server is not None and self.server.running:
                if (host is None or bind == self.server.host) and (port is None or want in (0, self.server.port)):
                    return self.server
                raise NbllmError(f"already serving at {self.server.url}; run `%serve stop` first")
            server = BackgroundServer(self.runtime, host=bind, port=want)
            try:
                server.start()
            except NbllmError as exc:
                hint = " (is Ollama or another server using it? try --port 0)" if want else ""
                raise NbllmError(f"{exc.message}{hint}") from None
            self.server = server
            return server

    def stop_server(self) -> str | None:
        """Stop the in-kernel server; its URL, or None when none ran."""
        with self._lock:
            server, self.server = self.server, None
            if server is None:
                return None
            url = server.url
            client = self._clients.pop(url, None)
            if client is not None:
                client.close()
            server.stop()
            return url

    def close(self) -> None:
        """End live widgets, stop the server, close clients, unload models of a runtime this session built."""
        self.end_widgets()
        if self._at_exit:
            atexit.unregister(self.end_widgets)
            self._at_exit = False
        self.stop_server()
        self.release_logs()
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
        if self._close_registered:
            atexit.unregister(self._close_runtime)
            self._close_registered = False
        self._close_runtime()
