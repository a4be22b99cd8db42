"""The ``/v2/`` registry routes are not in the OpenAPI document (they speak the registry protocol):
hypothesis drives them directly -- random path segments, digests, upload ids, query values and
bodies, over a real socket -- and every answer must be a 2xx/3xx/4xx in the registry's error shape,
never a 5xx, never a hang; a whole push-protocol upload must still work afterwards."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbllm.config import Settings
from nbllm.engine.fake import FakeEngineFactory
from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("NBLLM_FUZZ_EXAMPLES", "12")) * 10
_HEX = "0123456789abcdef"
segment = st.one_of(
    st.sampled_from(["library", "tiny", "latest", "..", ".", "%2e%2e", "sha256:", "uploads"]),
    st.text(min_size=1, max_size=20).map(lambda s: quote(s, safe="")),
)
digest = st.one_of(
    st.text(_HEX, min_size=64, max_size=64).map(lambda h: "sha256:" + h),
    st.text(_HEX, min_size=0, max_size=70).map(lambda h: "sha256:" + h),
    segment,
)
upload_id = st.one_of(st.text(_HEX, min_size=32, max_size=32), segment)
manifest = st.one_of(
    st.binary(max_size=200),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=10,
    ).map(lambda v: json.dumps(v).encode()),
    st.builds(
        lambda d, size: json.dumps(
            {"schemaVersion": 2, "config": {"digest": d, "size": size}, "layers": [{"digest": d, "size": size}]}
        ).encode(),
        digest,
        st.integers(-5, 10**12),
    ),
)


@st.composite
def requests_(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
    ns, model = draw(segment), draw(segment)
    repo = f"/v2/{ns}/{model}"
    choice = draw(st.integers(0, 7))
    if choice == 0:
        return draw(st.sampled_from(["GET", "HEAD"])), f"{repo}/manifests/{draw(st.one_of(segment, digest))}", {}, b""
    if choice == 1:
        return "PUT", f"{repo}/manifests/{draw(segment)}", {}, draw(manifest)
    if choice == 2:
        return "GET", f"{repo}/tags/list", {"n": str(draw(st.integers(-3, 5))), "last": draw(st.text(max_size=5))}, b""
    if choice == 3:
        return draw(st.sampled_from(["GET", "HEAD"])), f"{repo}/blobs/{draw(digest)}", {}, b""
    if choice == 4:
        params = draw(st.fixed_dictionaries({}, optional={"digest": digest, "mount": digest, "from": segment}))
        return "POST", f"{repo}/blobs/uploads/", params, draw(st.binary(max_size=64))
    method = draw(st.sampled_from(["PATCH", "PUT", "GET", "DELETE"]))
    params = {"digest": draw(digest)} if method == "PUT" else {}
    return method, f"{repo}/blobs/uploads/{draw(upload_id)}", params, draw(st.binary(max_size=64))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[BackgroundServer]:
    runtime = Runtime.from_settings(
        Settings(home=tmp_path / "home", models=tmp_path / "models"), engine_factory=FakeEngineFactory()
    )
    install_model(runtime.store, "tiny", write_tiny_gguf(tmp_path / "tiny.gguf"))
    with BackgroundServer(runtime) as srv:
        yield srv
    runtime.close()


def test_registry_routes(server: BackgroundServer, capsys: pytest.CaptureFixture[str]) -> None:
    statuses: Counter[int] = Counter()
    http = httpx.Client(base_url=server.url, timeout=30)

    @settings(
        max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(requests_())
    def one(request: tuple[str, str, dict[str, str], bytes]) -> None:
        method, path, params, body = request
        resp = http.request(method, path, params=params, content=body or None)
        statuses[resp.status_code] += 1
        assert resp.status_code < 500, (method, path, params, resp.text[:300])
        if resp.status_code >= 400 and method != "HEAD" and resp.content:
            answer = resp.json()  # the registry's {"errors": [...]}, or {"error": ...} for a path no route has
            message = answer["errors"][0]["message"] if "errors" in answer else answer["error"]
            assert isinstance(message, str) and message, resp.text[:300]

    try:
        one()
    finally:
        with capsys.disabled():
            print(f"\nfuzz (registry): {sum(statuses.values())} cases; statuses {dict(sorted(statuses.items()))}")
    # the protocol still works: upload a blob in two chunks, then find it
    data = b"a blob pushed after the fuzzing"
    want = "sha256:" + hashlib.sha256(data).hexdigest()
    start = http.post("/v2/me/pushed/blobs/uploads/")
    assert start.status_code == 202
    location = start.headers["location"]
    assert http.patch(location, content=data[:10]).status_code == 202
    assert http.put(location, params={"digest": want}, content=data[10:]).status_code == 201
    assert http.get(f"/v2/me/pushed/blobs/{want}").content == data
    http.close()
