"""Helpers of the fault tests: running nbllm commands in child processes, checking a store is whole."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from nbllm.config import Settings
from nbllm.runtime import Runtime
from nbllm.store import ModelStore
from nbllm.store.verify import verify_store

REPO = Path(__file__).resolve().parents[2]


def child_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without NBLLM_*/OLLAMA_*, with a store of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBLLM_", "OLLAMA_"))}
    env.update({"NBLLM_HOME": str(home), "PYTHONPATH": str(REPO)}, **extra)
    return env


def crash(
    models: Path, kill_at: str, args: list[str], env: dict[str, str], *, preexec: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``nbllm ARGS`` in a child that SIGKILLs itself at ``kill_at`` (see crash_child); ``none``: plain nbllm."""
    models.mkdir(parents=True, exist_ok=True)
    trace = models.parent / "trace.txt"
    cmd = [sys.executable, "-m", "tests.faults.crash_child", str(models), str(trace), kill_at, "--", *args]
    if kill_at == "none":
        cmd = [sys.executable, "-m", "nbllm", *args]
    return subprocess.run(
        cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=180, preexec_fn=preexec, check=False
    )


def leftovers(models: Path) -> list[str]:
    """Temporary or partial files anywhere in the store (what a crash leaves before a restart)."""
    names = []
    for path in models.rglob("*"):
        if path.is_file() and (path.name.startswith(".tmp-") or path.name.endswith(("-partial", ".partial"))):
            names.append(str(path.relative_to(models)))
    tmp = models / ".nbllm-tmp"
    names += [str(p.relative_to(models)) for p in tmp.rglob("*") if p.is_file()] if tmp.is_dir() else []
    return sorted(set(names))


def assert_whole(models: Path) -> list[str]:
    """Every manifest readable and every blob it names present and intact; the models listed."""
    store = ModelStore(models)
    report = verify_store(store)
    assert report.ok, report.problems
    return sorted(m.name.display for m in store.models())


def restart(models: Path) -> None:
    """What a server does when it starts again: clear temporary files, prune unreferenced blobs."""
    runtime = Runtime.from_settings(Settings(home=models.parent, models=models))
    try:
        runtime.startup()
    finally:
        runtime.close()
    store = ModelStore(models)
    assert leftovers(models) == [] or all(p.endswith(".partial") for p in leftovers(models)), leftovers(models)
    assert set(store.blobs.digests()) == store.referenced()
