"""What both HTTP backends share: an ``httpx.AsyncClient``, a repr without secrets, error bodies read once."""

from __future__ import annotations

import json
from typing import Any

import httpx
from pydantic import SecretStr

from nbllm.backends.base import BackendError

__all__ = ["HttpBackend", "error_message"]


def error_message(status: int, body: str) -> str:
    """``HTTP 404: model "x" not found`` from an Ollama (``{"error": "..."}``) or OpenAI (``{"error": {...}}``) body."""
    text = body.strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and "error" in data:
        err = data["error"]
        text = str(err.get("message", err)) if isinstance(err, dict) else str(err)
    return f"HTTP {status}: {text[:500] or '(empty body)'}"


class HttpBackend:
    """An async HTTP connection pool to one server; the API key goes into a header and nowhere else."""

    def __init__(
        self,
        url: str,
        *,
        api_key: SecretStr | None = None,
        timeout: float = 600.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"} if api_key else {}
        # no pool limit: the benchmark, not the pool, decides how many requests are in flight
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)),
            limits=limits,
            transport=transport,
            trust_env=False,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._http.post(path, json=body)
        if response.status_code >= 400:
            raise BackendError(error_message(response.status_code, response.text))
        data = response.json()
        if not isinstance(data, dict):
            raise BackendError(f"unexpected answer from {self.url}{path}: {response.text[:200]}")
        return data

    async def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code >= 400:
            body = await response.aread()
            raise BackendError(error_message(response.status_code, body.decode("utf-8", "replace")))
