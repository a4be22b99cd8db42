"""Run an ``nbllm`` command in this process and SIGKILL it at a chosen step of its filesystem work.

    python -m tests.faults.crash_child STORE_ROOT TRACE_FILE KILL_AT -- nbllm-args...

Every ``os.replace``, ``os.link``, ``os.unlink``, ``os.fsync`` and blob write that touches STORE_ROOT
is a step; each is appended to TRACE_FILE (``kind path``) *before* it happens. ``KILL_AT`` is
``kind[@text]:N[:after]`` -- kill -9 this process just before (or just after) the N-th step of that
kind (whose path contains ``text``) -- or ``none``. The kill is a real SIGKILL: no ``finally``
blocks, no atexit, no buffered flush.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _install(root: str, trace_path: str, kill_at: str) -> None:
    kind_wanted, text_wanted, n_wanted, when = "", "", 0, "before"
    if kill_at != "none":
        parts = kill_at.split(":")
        kind_wanted, _, text_wanted = parts[0].partition("@")
        n_wanted = int(parts[1])
        when = parts[2] if len(parts) > 2 else "before"
    counts: Counter[str] = Counter()
    trace = open(trace_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    def step(kind: str, path: str, run: Callable[[], Any]) -> Any:
        if not path.startswith(root):
            return run()
        trace.write(f"{kind} {path}\n")
        hit = False
        if kind == kind_wanted and text_wanted in path:
            counts[kind] += 1
            hit = counts[kind] == n_wanted
        if hit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = run()
        if hit:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    real_replace, real_link, real_unlink, real_fsync = os.replace, os.link, os.unlink, os.fsync

    def replace(src: Any, dst: Any, *a: Any, **k: Any) -> None:
        step("replace", str(dst), lambda: real_replace(src, dst, *a, **k))

    def link(src: Any, dst: Any, *a: Any, **k: Any) -> None:
        step("link", str(dst), lambda: real_link(src, dst, *a, **k))

    def unlink(path: Any, *a: Any, **k: Any) -> None:
        step("unlink", str(path), lambda: real_unlink(path, *a, **k))

    def fsync(fd: int) -> None:
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = ""
        step("fsync", path, lambda: real_fsync(fd))

    os.replace, os.link, os.unlink, os.fsync = replace, link, unlink, fsync  # type: ignore[assignment]

    from nbllm.store.blobs import BlobWriter

    real_write = BlobWriter.write

    def write(self: BlobWriter, data: bytes) -> None:
        step("blobwrite", str(self._store.root), lambda: real_write(self, data))

    BlobWriter.write = write  # type: ignore[method-assign]


def main() -> None:
    root, trace, kill_at, sep, *args = sys.argv[1:]
    assert sep == "--"
    _install(str(Path(root).resolve()), trace, kill_at)
    from nbllm.cli.main import cli

    cli.main(args=args, prog_name="nbllm")


if __name__ == "__main__":
    main()
