"""Stores written by older Ollama releases: blob files named ``sha256:<hex>`` (Ollama's ``fixBlobs``).

Ollama renames them to ``sha256-<hex>`` every time its server starts (``:`` is not allowed in
Windows file names); nbllm's server does the same, so an old ``OLLAMA_MODELS`` directory works.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from nbllm.store.blobs import fsync_dir
from nbllm.store.digest import digest_from_filename, filename_for

__all__ = ["fix_blob_names"]

log = logging.getLogger(__name__)


def fix_blob_names(blobs: Path) -> list[str]:
    """Rename ``sha256:<hex>`` blob files to ``sha256-<hex>``; return the digests renamed."""
    renamed: list[str] = []
    if not blobs.is_dir():
        return renamed
    for entry in blobs.iterdir():
        digest = digest_from_filename(entry.name)
        if digest is None or not entry.name.startswith("sha256:") or not entry.is_file():
            continue
        os.replace(entry, blobs / filename_for(digest))
        renamed.append(digest)
    if renamed:
        fsync_dir(blobs)
        log.info("renamed %d blob(s) from the legacy sha256:<hex> form", len(renamed))
    return renamed
