"""uvicorn's housekeeping tick once a second (``connections.QuietServer``): an idle server's event loop sleeps,
the ``Date`` header stays right, and a stop still takes effect at once."""

from __future__ import annotations

import threading
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import pytest

from nbllm.runtime import Runtime
from nbllm.server import BackgroundServer
from nbllm.server.connections import QuietServer


def _switches(thread: threading.Thread) -> int:
    """How many times the thread has been run (``schedstat``'s third field): once per wake-up of a sleeping one."""
    return int(Path(f"/proc/self/task/{thread.native_id}/schedstat").read_text().split()[2])


def test_an_idle_server_s_event_loop_wakes_about_once_a_second(fake_runtime: Runtime) -> None:
    with BackgroundServer(fake_runtime) as server:
        assert httpx.get(server.url + "/api/version").status_code == 200
        thread = server._thread
        assert thread is not None
        time.sleep(0.5)
        before = _switches(thread)
        time.sleep(3)
        woken = _switches(thread) - before
    assert woken <= 8, f"{woken} wake-ups in 3 s (uvicorn's own tick: 30)"


def test_the_date_header_is_the_time_of_the_response(fake_runtime: Runtime) -> None:
    with BackgroundServer(fake_runtime) as server:
        time.sleep(2.2)  # (past two ticks)
        before = time.time()
        date = parsedate_to_datetime(httpx.get(server.url + "/api/version").headers["date"]).timestamp()
    assert before - 2 <= date <= time.time() + 1  # (whole seconds; the header is made once a tick)


def test_a_stop_wakes_the_tick_at_once(fake_runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a tick of an hour, only the wake-up that setting ``should_exit`` sends can end the serve loop."""
    monkeypatch.setattr(QuietServer, "TICK_S", 3600.0)
    server = BackgroundServer(fake_runtime).start()
    thread = server._thread
    assert thread is not None
    time.sleep(0.3)  # (the serve loop is waiting on its tick)
    started = time.monotonic()
    server.stop(timeout=20)
    assert not thread.is_alive() and time.monotonic() - started < 5
