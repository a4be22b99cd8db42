"""Blobs: atomic, verified writes; nothing partial is ever visible under a digest name."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nbllm.errors import DigestMismatch, StoreError
from nbllm.store.blobs import BlobStore
from nbllm.store.digest import digest_bytes


def test_put_and_read(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    digest = blobs.put_bytes(b"hello")
    assert digest == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert blobs.has(digest) and blobs.read_bytes(digest) == b"hello"
    assert oct(blobs.path(digest).stat().st_mode & 0o777) == "0o600"  # not world-readable (store.permissions)


def test_digest_mismatch_stores_nothing(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    with pytest.raises(DigestMismatch):
        blobs.put_stream([b"abc"], expected=digest_bytes(b"xyz"))
    assert list(tmp_path.iterdir()) == []


def test_failure_midway_leaves_no_partial(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)

    def chunks():  # type: ignore[no-untyped-def]
        yield b"a" * 1000
        raise OSError("connection lost")

    with pytest.raises(OSError):
        blobs.put_stream(chunks())
    assert list(tmp_path.iterdir()) == []


def test_killed_writer_leaves_only_a_temp_file_that_startup_cleans(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from nbllm.store.blobs import BlobStore
        w = BlobStore(Path({str(tmp_path)!r})).writer()
        w.write(b"x" * 4096)
        print("writing", flush=True)
        time.sleep(60)
    """)
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    blobs = BlobStore(tmp_path)
    assert list(blobs.digests()) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    blobs.clean_temp()
    assert list(tmp_path.iterdir()) == []


def test_gc_keeps_referenced(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    keep, drop = blobs.put_bytes(b"keep"), blobs.put_bytes(b"drop")
    assert blobs.gc({keep}) == [drop]
    assert blobs.has(keep) and not blobs.has(drop)


def test_a_failed_blob_write_names_no_server_path(tmp_path: Path) -> None:
    """The error reaches API clients: it says what failed, and the path goes to the log only."""
    root = tmp_path / "secret-location" / "blobs"
    blobs = BlobStore(root)
    root.rmdir()  # the next temporary file cannot be made
    with pytest.raises(StoreError) as caught:
        blobs.put_bytes(b"x")
    assert "model store" in caught.value.message and "secret-location" not in caught.value.message
