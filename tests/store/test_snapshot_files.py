"""KV snapshot files as the store keeps them: private, whole, read back only for their own layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nbllm.store.snapshots import SnapshotError, SnapshotStore

LAYOUT = {"model": "sha256:" + "ab" * 32, "num_ctx": 1024}


def test_a_snapshot_is_private_and_reads_back(tmp_path: Path) -> None:
    """A snapshot is a conversation in another form: 0600 in 0700 directories, whatever the umask."""
    old = os.umask(0o022)
    try:
        snap = SnapshotStore(tmp_path / "kvstate", 1 << 20).save(LAYOUT, [1, 2, 3], b"state bytes")
    finally:
        os.umask(old)
    assert snap.path.stat().st_mode & 0o777 == 0o600
    for directory in (snap.path.parent, snap.path.parent.parent):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    assert [p.name for p in snap.path.parent.iterdir()] == [snap.path.name]  # no temporary file left
    store = SnapshotStore(tmp_path / "kvstate", 1 << 20)
    assert store.load(snap.path, LAYOUT, [1, 2, 3]) == b"state bytes"
    with pytest.raises(SnapshotError):
        store.load(snap.path, {**LAYOUT, "num_ctx": 2048}, [1, 2, 3])
