"""For tests of abandoned work: a client on a raw socket that can vanish at any moment, and readers of
what the server is doing (requests generating, queued, waiting for a model; the decode threads' CPU time).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support.metrics import scrape, value

__all__ = ["Vanishing", "decode_cpu", "engine", "finished", "pending", "until"]


class Vanishing:
    """An HTTP/1.1 request sent by hand, so the test decides when the client leaves (``close``)."""

    def __init__(self, url: str, path: str, body: dict[str, Any]) -> None:
        host, port = url.removeprefix("http://").split(":")
        payload = json.dumps(body).encode()
        self.sock = socket.create_connection((host, int(port)), timeout=120)
        head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        self.sock.sendall(head.encode() + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        self.received = b""

    def first_chunk(self) -> bytes:
        """Wait for the response's first bytes (a stream's headers come with its first chunk)."""
        while b"\r\n\r\n" not in self.received:
            chunk = self.sock.recv(65536)
            assert chunk, self.received
            self.received += chunk
        return self.received

    def close(self) -> float:
        """Vanish without a word; returns the moment (``time.monotonic``)."""
        self.sock.close()
        return time.monotonic()


def engine(url: str) -> tuple[int, int]:
    """(requests generating, requests queued for a slot) over the loaded models, as ``/api/ps`` says."""
    models = httpx.get(url + "/api/ps", timeout=30).json()["models"]
    return sum(m.get("active_requests", 0) for m in models), sum(m.get("queued_requests", 0) for m in models)


def pending(url: str) -> float:
    """Requests waiting (for a model, or a slot), as ``/metrics`` says."""
    return value(scrape(url), "nbllm_scheduler_pending")


def finished(url: str) -> float:
    """Generations that ran to their end (a cancelled one never does), as ``/metrics`` counts them."""
    return sum(v for (name, _), v in scrape(url).items() if name == "nbllm_generations_total")


def until(cond: Callable[[], bool], timeout: float = 120.0) -> float:
    """Seconds until ``cond()`` held (polled every 20 ms); fails the test past ``timeout``."""
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.02)
    return time.monotonic() - start


def decode_cpu() -> float:
    """CPU seconds the decode threads of this process have used (they run the server's models)."""
    ticks = 0
    for thread in threading.enumerate():
        if thread.name.startswith("nbllm-decode") and thread.native_id is not None:
            stat = Path(f"/proc/self/task/{thread.native_id}/stat")
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:  # (it just ended)
                continue
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")
