"""Which backend a command talks to: the server at OLLAMA_HOST, or this process when none runs."""

from __future__ import annotations

from nbllm.client import BaseClient, Client, LocalClient
from nbllm.config import Settings
from nbllm.errors import ServerUnreachable

__all__ = ["connect"]


def connect(*, local_ok: bool = True) -> BaseClient:
    """A client of the server at OLLAMA_HOST.

    When no server answers and OLLAMA_HOST was not set explicitly, commands that can run without
    one (run, pull, list, show, cp, rm) run in this process against the same model store.
    """
    settings = Settings.from_env()
    client = Client(settings=settings)
    if client.heartbeat():
        return client
    client.close()
    if local_ok and "host" not in settings.model_fields_set:
        from nbllm.runtime import Runtime

        return LocalClient(Runtime.from_settings(settings))
    raise ServerUnreachable(
        f"could not connect to a running nbllm server at {settings.host.url}; start one with `nbllm serve`"
    )
