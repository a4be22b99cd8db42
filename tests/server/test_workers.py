"""The streams' worker threads: a job runs under its own name, and an idle worker takes the next one."""

from __future__ import annotations

import threading

import pytest

from nbllm.server import workers


def _run(name: str) -> tuple[str, int | None]:
    done = threading.Event()
    seen: list[tuple[str, int | None]] = []

    def job() -> None:
        me = threading.current_thread()
        seen.append((me.name, me.ident))
        done.set()

    workers.spawn(name, job)
    assert done.wait(10)
    return seen[0]


def test_an_idle_worker_takes_the_next_job_without_a_new_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    real_start = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        started.append(self.name)
        real_start(self)

    name, first = _run("nbllm-stream")
    assert name == "nbllm-stream"
    deadline = threading.Event()
    for _ in range(200):  # the worker files itself as idle right after its job returns
        if workers._idle:
            break
        deadline.wait(0.01)
    monkeypatch.setattr(threading.Thread, "start", counting_start)
    name, second = _run("nbllm-stream-close")
    assert name == "nbllm-stream-close"  # (a running worker bears its job's name, an idle one does not)
    assert started == [] and second == first


def test_a_failing_job_leaves_the_worker_serving() -> None:
    def boom() -> None:
        raise RuntimeError("boom")

    workers.spawn("nbllm-stream", boom)
    assert _run("nbllm-stream")[0] == "nbllm-stream"
