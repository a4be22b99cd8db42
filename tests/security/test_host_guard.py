"""DNS rebinding: a server listening on loopback answers only requests addressed to a local name.

A page on ``http://attacker.example:11434`` whose name the attacker re-points at 127.0.0.1 makes
the browser send ``Host: attacker.example:11434`` (and, being same-origin, no CORS check applies).
As Ollama does, a loopback-bound server refuses every Host that is not localhost, a loopback,
private or unspecified address, an address of this machine, its host name, or ``*.localhost``,
``*.local``, ``*.internal``. Tested over real sockets, with the Host header as sent.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import httpx
import pytest

from nbllm.config import Settings
from nbllm.engine.fake import FakeEngineFactory
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer
from nbllm.server.security import allowed_host, listener_is_loopback
from tests.conftest import CHATML
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf

ALLOWED = [
    "localhost",
    "localhost:{port}",
    "127.0.0.1:{port}",
    "127.1.2.3",
    "[::1]:{port}",
    "0.0.0.0:{port}",
    "10.1.2.3",
    "172.16.0.1:{port}",
    "192.168.1.20:{port}",
    "[fd00::1]:{port}",
    "[::ffff:127.0.0.1]:{port}",
    "foo.localhost:{port}",
    "printer.local",
    "db.internal:{port}",
    "LOCALHOST:{port}",
]
REFUSED = [
    "attacker.example:{port}",
    "attacker.example",
    "localhost.attacker.example",
    "127.0.0.1.nip.io:{port}",
    "8.8.8.8:{port}",
    "172.32.0.1",  # just past 172.16.0.0/12
    "[2001:db8::1]:{port}",
    "local",
    "internal.attacker.example",
]


def _raw_get(
    server: BackgroundServer, path: str, host: str, *, method: str = "GET", origin: str = ""
) -> tuple[int, bytes]:
    """Send a request with exactly this Host header (HTTP clients would rewrite it)."""
    extra = f"Origin: {origin}\r\n" if origin else ""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture(scope="module")
def loopback_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    """One loopback server for the module (its state is only read)."""
    root = tmp_path_factory.mktemp("guard")
    runtime = Runtime.from_settings(
        Settings(home=root / "home", models=root / "models"), engine_factory=FakeEngineFactory()
    )
    install_model(runtime.store, "tiny", write_tiny_gguf(root / "tiny.gguf"), template=CHATML)
    with BackgroundServer(runtime, host="127.0.0.1") as server:
        yield server
    runtime.close()


def test_the_default_bind_address_is_loopback() -> None:
    assert Settings().host.bind_host == "127.0.0.1"
    assert BackgroundServer.__init__.__defaults__ == ("127.0.0.1", 0)
    assert listener_is_loopback("127.0.0.1") and listener_is_loopback("::1") and listener_is_loopback("localhost")
    assert not listener_is_loopback("0.0.0.0") and not listener_is_loopback("192.168.1.2")


@pytest.mark.parametrize("host", ALLOWED)
def test_local_names_are_served(loopback_server: BackgroundServer, host: str) -> None:
    status, body = _raw_get(loopback_server, "/api/tags", host.format(port=loopback_server.port))
    assert status == 200 and b"tiny" in body


@pytest.mark.parametrize("path", ["/", "/api/tags", "/api/version", "/api/ps", "/metrics"])
@pytest.mark.parametrize("host", REFUSED)
def test_foreign_names_get_403(loopback_server: BackgroundServer, host: str, path: str) -> None:
    status, body = _raw_get(loopback_server, path, host.format(port=loopback_server.port))
    assert (status, body) == (403, b"")


def test_a_rebinding_attack_from_a_page(loopback_server: BackgroundServer) -> None:
    port = loopback_server.port
    evil = f"attacker.example:{port}"
    # the page's own origin: same-origin for the browser, so CORS lets it through; the Host guard does not
    status, _ = _raw_get(loopback_server, "/api/tags", evil, origin=f"http://{evil}")
    assert status == 403
    status, _ = _raw_get(loopback_server, "/api/delete", evil, method="DELETE", origin=f"http://{evil}")
    assert status == 403
    assert _raw_get(loopback_server, "/api/tags", f"127.0.0.1:{port}")[0] == 200  # the model is still there


def test_the_machines_own_names(loopback_server: BackgroundServer) -> None:
    port = loopback_server.port
    assert _raw_get(loopback_server, "/api/tags", f"{socket.gethostname()}:{port}")[0] == 200
    assert allowed_host(socket.gethostname())


def test_options_from_an_allowed_host_is_204(loopback_server: BackgroundServer) -> None:
    assert _raw_get(loopback_server, "/api/chat", f"localhost:{loopback_server.port}", method="OPTIONS")[0] == 204


def test_no_guard_when_listening_on_every_interface(make_server: Callable[..., BackgroundServer]) -> None:
    # bound to 0.0.0.0 the server is meant to be reached by other names (Ollama checks nothing then either)
    server = make_server("0.0.0.0")
    assert _raw_get(server, "/api/tags", f"attacker.example:{server.port}")[0] == 200
    assert httpx.get(server.url + "/api/tags").status_code == 200
