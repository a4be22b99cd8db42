"""Many writers on one store: pull, create, copy, delete, list and show at once (issue #18, item 3).

A server (over HTTP) and a second process working in-process on the same ``OLLAMA_MODELS`` (what
the CLI does when no server answers) run random operations on a small pool of names, released
together by a barrier, round after round. After every round each listed model must be complete
(every blob present and hashing to its digest, the GGUF header readable) and nothing may have
failed with a server error. Before the store lock a copy racing a delete, or a create racing a
delete of its base, left models naming removed blobs, and a show racing a delete was a 500.
FakeEngines keep the rounds fast; the last test loads the survivors of a race with llama.cpp.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbllm.client import BaseClient, Client, LocalClient
from nbllm.config import Settings
from nbllm.engine.fake import FakeEngineFactory
from nbllm.errors import InvalidRequest, NotFound
from nbllm.runtime import Runtime
from nbllm.schema import CreateRequest
from nbllm.server import BackgroundServer
from nbllm.store import ModelStore
from nbllm.store.gguf import read_gguf
from nbllm.store.verify import verify_store
from tests.conftest import CHATML
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf

ROUNDS = int(os.environ.get("NBLLM_RACE_ROUNDS", "40"))
"""Rounds of the fast test (before the store lock, 40 rounds broke the store in most runs)."""
PARENT_THREADS = 6
CHILD_THREADS = 3
NAMES = ("a", "b", "c", "d", "e")
BASES = ("a", "b")


@dataclass
class Outcome:
    """What the operations of one side did in one round."""

    ops: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    """Operations that failed with anything but a 4xx (a 5xx, an unexpected exception)."""


def _pool(pulled: str) -> list[str]:
    return [*NAMES, pulled]


def _one_op(client: BaseClient, rng: random.Random, upload: str, pulled: str) -> str:
    """Do one random operation; return what it was."""
    pool = _pool(pulled)
    kinds = ["copy", "delete", "from", "files", "pull", "show", "list", "restart"]
    kind = rng.choices(kinds, [3, 3, 3, 1, 1, 2, 1, 1 if isinstance(client, LocalClient) else 0])[0]
    src, dst = rng.choice(pool), rng.choice(NAMES)
    if kind == "restart":  # a new runtime on the store starting as a server does: pruning unreferenced blobs
        settings = client.runtime.settings
        Runtime.from_settings(settings, engine_factory=FakeEngineFactory()).startup()
    elif kind == "copy":
        client.copy(src, dst)
    elif kind == "delete":
        client.delete(src)
    elif kind == "from":
        list(
            client.create(CreateRequest.model_validate({"model": dst, "from": src, "system": f"be {rng.randrange(3)}"}))
        )
    elif kind == "files":
        spelled = rng.choice([upload, upload.replace(":", "-")])
        list(client.create(CreateRequest(model=dst, files={"model.gguf": spelled}, template=CHATML)))
    elif kind == "pull":
        list(client.pull(pulled, insecure=True))
    elif kind == "show":
        client.show(src)
    else:
        client.list_models()
    return f"{kind} {src} {dst}"


def run_ops(client: BaseClient, seed: str, threads: int, barrier: Any, upload: str, pulled: str) -> Outcome:
    """``threads`` random operations, started together at ``barrier``."""
    out = Outcome()

    def worker(i: int) -> None:
        rng = random.Random(f"{seed}-{i}")
        barrier.wait(timeout=60)
        op = "?"
        try:
            for _ in range(2):
                op = _one_op(client, rng, upload, pulled)
                out.ops.append(op)
        except (InvalidRequest, NotFound):
            pass  # a 4xx: the name was gone, or not there yet
        except Exception as exc:
            out.failures.append(f"{op}: {type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    return out


def _child(models: str, home: str, rounds: int, barrier: Any, results: Any, upload: str, pulled: str) -> None:
    """The second process: a runtime of its own on the same store, as the CLI works without a server."""
    rt = Runtime.from_settings(Settings(home=Path(home), models=Path(models)), engine_factory=FakeEngineFactory())
    client = LocalClient(rt)
    for r in range(rounds):
        out = run_ops(client, f"child-{r}", CHILD_THREADS, barrier, upload, pulled)
        results.put((out.ops, out.failures))
    rt.close()


def problems(store: ModelStore, names: list[str], keep: frozenset[str] | None = None) -> list[str]:
    """What is wrong with the listed models (missing or corrupt blobs, unreadable GGUF headers) and, given
    ``keep``, with the store (blobs no model uses, but those)."""
    found = []
    if keep is not None:
        found += [f"orphan {d[:19]}" for d in sorted(set(store.blobs.digests()) - store.referenced() - keep)]
    report = verify_store(store)
    found += [f"{p.kind} {p.digest[:19]} of {', '.join(p.models)}: {p.detail}" for p in report.problems]
    for name in names:
        model = store.find(name)
        if model is None:
            found.append(f"{name} is listed but cannot be found")
        elif model.model_path is not None:
            try:
                read_gguf(model.model_path)
            except Exception as exc:
                found.append(f"{name}: {exc}")
    return found


class Rig:
    """A registry to pull from, the server under test, and a store reset between rounds."""

    def __init__(self, root: Path) -> None:
        self.root = root
        src = Runtime.from_settings(
            Settings(home=root / "src-home", models=root / "src"), engine_factory=FakeEngineFactory()
        )
        install_model(src.store, "p0", write_tiny_gguf(root / "p0.gguf", context_length=1024), template=CHATML)
        self.source = BackgroundServer(src, port=0).start()
        self.pulled = f"{self.source.url.removeprefix('http://')}/library/p0:latest"
        self.settings = Settings(home=root / "home", models=root / "models")
        self.rt = Runtime.from_settings(self.settings, engine_factory=FakeEngineFactory())
        self.server = BackgroundServer(self.rt, port=0).start()
        self.client = Client(self.server.url, settings=self.settings)
        self.upload_file = write_tiny_gguf(root / "u.gguf", context_length=512)
        self.upload = "sha256:" + hashlib.sha256(self.upload_file.read_bytes()).hexdigest()

    def reset(self) -> None:
        """Every model removed (directly, whatever state a round left), then the base models installed."""
        store = self.rt.store
        for path in list(store.manifests.root.glob("*/*/*/*")):
            path.unlink()
        store.prune()
        for i, name in enumerate(BASES):
            gguf = write_tiny_gguf(self.root / f"{name}.gguf", context_length=2048 * (i + 1))
            install_model(store, name, gguf, template=CHATML, system=f"base {name}")
        store.blobs.put_stream([self.upload_file.read_bytes()])

    def listed(self) -> list[str]:
        return [m.model or "" for m in self.client.list_models().models]

    def close(self) -> None:
        self.client.close()
        self.server.stop()
        self.rt.close()
        self.source.stop()
        self.source.runtime.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


@pytest.mark.slow
def test_random_operations_from_a_server_and_a_second_process_never_break_the_store(rig: Rig) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PARENT_THREADS + CHILD_THREADS)
    results = ctx.Queue()
    rig.reset()
    child = ctx.Process(
        target=_child,
        args=(
            str(rig.settings.models_dir),
            str(rig.root / "child-home"),
            ROUNDS,
            barrier,
            results,
            rig.upload,
            rig.pulled,
        ),
        daemon=True,
    )
    child.start()
    broken: list[tuple[int, list[str], list[str]]] = []
    failures: list[str] = []
    done = 0
    try:
        for r in range(ROUNDS):
            mine = run_ops(rig.client, f"parent-{r}", PARENT_THREADS, barrier, rig.upload, rig.pulled)
            ops, theirs = results.get(timeout=180)
            failures += [f"round {r}: {f}" for f in mine.failures + theirs]
            done += len(mine.ops) + len(ops)
            found = problems(rig.rt.store, rig.listed(), frozenset({rig.upload}))
            if found:
                broken.append((r, found, mine.ops + ops))
            rig.reset()
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
    orphaned = sum(all(p.startswith("orphan") for p in found) for _, found, _ in broken)
    summary = (
        f"{len(broken) - orphaned} of {ROUNDS} rounds broke the store, {orphaned} more left orphan blobs; "
        f"{len(failures)} operations failed with 5xx; {done} succeeded"
    )
    print(summary)
    assert not broken and not failures, (summary, broken[:3], failures[:10])


def test_a_show_racing_a_delete_is_found_or_not_found_never_a_server_error(rig: Rig) -> None:
    rig.reset()
    statuses: list[int] = []
    with httpx.Client(base_url=rig.server.url, timeout=30) as http:
        for _ in range(60):
            http.post("/api/copy", json={"source": "a", "destination": "c"}).raise_for_status()
            go = threading.Barrier(2)

            def show(go: threading.Barrier = go) -> None:
                go.wait()
                statuses.append(http.post("/api/show", json={"model": "c"}).status_code)

            t = threading.Thread(target=show)
            t.start()
            go.wait()
            http.request("DELETE", "/api/delete", json={"model": "c"})
            t.join()
    assert set(statuses) <= {200, 404}, statuses


@pytest.mark.model
def test_survivors_of_a_race_over_smollm2_load_and_answer(live_server: BackgroundServer) -> None:
    """Copies and creates of SmolLM2 racing deletes, then every survivor chats on llama.cpp."""
    names = [f"race-{i}" for i in range(4)]
    go = threading.Barrier(len(names) * 2)
    errors: list[str] = []
    with httpx.Client(base_url=live_server.url, timeout=120) as http:
        for name in names:
            http.post("/api/copy", json={"source": "smollm2:135m", "destination": name}).raise_for_status()

        def op(job: Callable[[], httpx.Response]) -> None:
            go.wait()
            resp = job()
            if resp.status_code >= 500 or ('"error"' in resp.text and "not found" not in resp.text):
                errors.append(resp.text)

        jobs: list[Callable[[], httpx.Response]] = []
        for i, name in enumerate(names):
            other = names[(i + 1) % len(names)]
            jobs.append(lambda n=name: http.request("DELETE", "/api/delete", json={"model": n}))
            body = {"model": other, "from": name, "system": f"You are number {i}.", "stream": False}
            jobs.append(lambda b=body: http.post("/api/create", json=b))
        threads = [threading.Thread(target=op, args=(job,)) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        survivors = [m["name"] for m in http.get("/api/tags").json()["models"] if m["name"].startswith("race-")]
        assert not problems(live_server.runtime.store, survivors)
        for name in survivors[:2]:
            chat = {
                "model": name,
                "messages": [{"role": "user", "content": "Hi"}],
                "stream": False,
                "options": {"num_predict": 2, "temperature": 0},
                "keep_alive": 0,
            }
            resp = http.post("/api/chat", json=chat)
            assert resp.status_code == 200 and resp.json()["done"], resp.text
        for name in survivors:
            http.request("DELETE", "/api/delete", json={"model": name}).raise_for_status()
    assert not errors, errors
