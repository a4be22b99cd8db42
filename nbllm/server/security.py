"""Access controls in front of every route: CORS, the Host-header guard, an optional API key, body limits.

One pure-ASGI middleware, checks in Ollama's order (``server/routes.go``: gin-contrib/cors, then
``allowedHostsMiddleware``), then nbllm's own two:

1. **CORS.** A request with an ``Origin`` that is neither its own host nor an allowed origin gets
   ``403`` with an empty body. Allowed: ``OLLAMA_ORIGINS`` (comma separated, one ``*`` wildcard each,
   a lone ``*`` allows all) plus localhost, 127.0.0.1 and 0.0.0.0 on any port over http/https, and
   ``app://``, ``file://``, ``tauri://``, ``vscode-webview://``, ``vscode-file://``. A preflight
   (``OPTIONS``) from an allowed origin is answered ``204`` here, before any key is asked for.
2. **Host guard** against DNS rebinding: when the server listens on a loopback address, a ``Host``
   that is not localhost, a loopback/private/unspecified IP, an address of this machine, its host
   name, or ``*.localhost`` / ``*.local`` / ``*.internal`` gets ``403``.
3. **API key** (``NBLLM_API_KEY``; Ollama has none): every route but ``/`` needs
   ``Authorization: Bearer <key>``, else ``401``. Compared in constant time.
4. **Body size** (``NBLLM_MAX_REQUEST_SIZE``): a larger body gets ``413`` before it is parsed. Only
   the requests that the router dispatches to a blob upload route (``streamed``, decided by matching
   the app's routes, never by a substring of the path) are exempt: they stream to disk, verified.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from nbllm.server.errors import error_bytes

__all__ = [
    "ALLOWED_HEADERS",
    "DEFAULT_ORIGINS",
    "OriginPolicy",
    "SecurityMiddleware",
    "allowed_host",
    "listener_is_loopback",
]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_ORIGINS: tuple[str, ...] = (
    *(
        f"{scheme}://{host}{port}"
        for host in ("localhost", "127.0.0.1", "0.0.0.0")
        for scheme, port in (("http", ""), ("https", ""), ("http", ":*"), ("https", ":*"))
    ),
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
)
"""Origins Ollama always allows (``envconfig.AllowedOrigins``)."""

ALLOWED_HEADERS: tuple[str, ...] = (
    "Authorization",
    "Content-Type",
    "User-Agent",
    "Accept",
    "X-Requested-With",
    "OpenAI-Beta",
    "x-stainless-arch",
    "x-stainless-async",
    "x-stainless-custom-poll-interval",
    "x-stainless-helper-method",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-poll-helper",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
)
"""Request headers a preflight may ask for (Ollama's list)."""

_METHODS = "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
_MAX_AGE = str(12 * 3600)
_PRIVATE_NETS = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)  # Go's netip.Addr.IsPrivate
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")


class OriginPolicy:
    """Which ``Origin`` values may call the API (gin-contrib/cors with wildcards, as Ollama configures it).

    >>> policy = OriginPolicy(["chrome-extension://*", "https://*.example.com"])
    >>> [policy.allows(o) for o in ("http://localhost:3000", "chrome-extension://abc", "https://a.example.com")]
    [True, True, True]
    >>> [policy.allows(o) for o in ("https://evil.com", "http://localhost.evil.com", "null")]
    [False, False, False]
    >>> OriginPolicy(["*"]).allow_all
    True
    """

    def __init__(self, extra: Iterable[str] = ()) -> None:
        origins = [o.strip().lower() for o in (*extra, *DEFAULT_ORIGINS) if o.strip()]
        self.allow_all = "*" in origins
        self._exact = frozenset(o for o in origins if "*" not in o)
        self._wild = tuple(tuple(o.split("*", 1)) for o in origins if "*" in o and o != "*")

    def allows(self, origin: str) -> bool:
        """Whether a request from ``origin`` is allowed."""
        if self.allow_all:
            return True
        origin = origin.lower()
        if origin in self._exact:
            return True
        return any(
            origin.startswith(pre) and origin.endswith(post) and len(origin) >= len(pre) + len(post)
            for pre, post in self._wild
        )


def _split_host(host_header: str) -> str:
    """The host part of a ``Host`` header (Go's net.SplitHostPort, the whole value when there is no port)."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    if host_header.count(":") == 1:
        return host_header.split(":", 1)[0]
    return host_header


@functools.lru_cache(maxsize=256)
def _is_local_address(ip: str) -> bool:
    """Whether an address belongs to one of this machine's interfaces (binding to it succeeds only then)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((ip, 0))
    except OSError:
        return False
    return True


def allowed_host(host_header: str) -> bool:
    """Whether a ``Host`` header may reach a loopback-bound server (Ollama's ``allowedHostsMiddleware``).

    >>> [allowed_host(h) for h in ("localhost:11434", "127.0.0.1:11434", "[::1]:11434", "10.1.2.3", "box.local")]
    [True, True, True, True, True]
    >>> [allowed_host(h) for h in ("evil.example.com", "evil.example.com:11434", "8.8.8.8:11434")]
    [False, False, False]
    """
    host = _split_host(host_header.strip()).lower()
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    if addr is not None:
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if addr.is_loopback or addr.is_unspecified or any(addr in net for net in _PRIVATE_NETS):
            return True
        return _is_local_address(str(addr))
    if host in ("", "localhost") or host == socket.gethostname().lower():
        return True
    return host.endswith(_LOCAL_SUFFIXES)


def listener_is_loopback(host: str) -> bool:
    """Whether a listening address accepts only local connections (``localhost``, 127.0.0.0/8, ::1)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SecurityMiddleware:
    """The checks above, as one ASGI middleware (``listen_host=None``: judge by the connection's local address).

    ``streamed(scope)`` says whether a request goes to a route that streams its body to disk (no size limit).
    """

    def __init__(
        self,
        app: Any,
        *,
        origins: Iterable[str] = (),
        api_key: str | None = None,
        max_body: int = 0,
        listen_host: str | None = None,
        streamed: Callable[[MutableMapping[str, Any]], bool] | None = None,
    ) -> None:
        self.app = app
        self.policy = OriginPolicy(origins)
        self._key = api_key.encode("utf-8") if api_key else None
        self.max_body = max_body
        self._streamed = streamed
        self._guard = None if listen_host is None else listener_is_loopback(listen_host)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path, method = scope["path"], scope["method"]
        origin = headers.get("origin", "")
        host = headers.get("host", "")
        if origin and origin not in (f"http://{host}", f"https://{host}"):  # a cross-origin request
            if not self.policy.allows(origin):
                await _respond(send, 403)
                return
            cors = self._cors_headers(origin)
            if method == "OPTIONS":
                await _respond(send, 204, headers=[*cors, *self._preflight_headers()])
                return
            send = _with_headers(send, cors)
        if self._guarded(scope):
            if not allowed_host(host):
                await _respond(send, 403)
                return
            if method == "OPTIONS":
                await _respond(send, 204)
                return
        if self._key is not None and path != "/" and not self._authorized(headers):
            await _deny(send, path)
            return
        if self.max_body and not (self._streamed is not None and self._streamed(scope)):
            limited = await self._limited(scope, headers, receive, send)
            if limited is None:
                return
            receive = limited
        await self.app(scope, receive, send)

    def _guarded(self, scope: MutableMapping[str, Any]) -> bool:
        if self._guard is not None:
            return self._guard
        server = scope.get("server")  # no listener known: the local address of this connection
        return server is not None and listener_is_loopback(str(server[0]))

    def _authorized(self, headers: dict[str, str]) -> bool:
        assert self._key is not None
        scheme, _, token = headers.get("authorization", "").strip().partition(" ")
        given = token.strip().encode("latin-1") if scheme.lower() == "bearer" else b""  # the raw header bytes
        return hmac.compare_digest(given, self._key)

    def _cors_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        if self.policy.allow_all:
            return [(b"access-control-allow-origin", b"*")]
        return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]

    def _preflight_headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"access-control-allow-methods", _METHODS.encode()),
            (b"access-control-allow-headers", ",".join(ALLOWED_HEADERS).encode()),
            (b"access-control-max-age", _MAX_AGE.encode()),
        ]

    async def _limited(
        self, scope: MutableMapping[str, Any], headers: dict[str, str], receive: Receive, send: Send
    ) -> Receive | None:
        """A ``receive`` that replays the body, or None once a 413 was sent for a body over the limit."""
        length = headers.get("content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_body:
                await _too_large(send, scope["path"], self.max_body)
                return None
            return receive  # the server reads exactly Content-Length bytes
        messages: list[Message] = []
        size = 0
        while True:  # chunked: read ahead (the app would read it all anyway), give up past the limit
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_body:
                await _too_large(send, scope["path"], self.max_body)
                return None
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        return replay


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped


async def _respond(
    send: Send, status: int, body: bytes = b"", *, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    head = list(headers or [])
    if body:
        head.append((b"content-type", b"application/json"))
    head.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def _deny(send: Send, path: str) -> None:
    message = "unauthorized: this server requires an API key (send 'Authorization: Bearer <NBLLM_API_KEY>')"
    await _respond(send, 401, error_bytes(path, 401, message), headers=[(b"www-authenticate", b'Bearer realm="nbllm"')])


async def _too_large(send: Send, path: str, limit: int) -> None:
    message = f"request body too large: the limit is {limit} bytes (raise NBLLM_MAX_REQUEST_SIZE to allow more)"
    await _respond(send, 413, error_bytes(path, 413, message))
