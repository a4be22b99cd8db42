"""sha256 digests: ``sha256:<hex>`` in the API, ``sha256-<hex>`` as blob file names."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from nbllm.errors import InvalidRequest

__all__ = ["digest_bytes", "digest_file", "digest_from_filename", "filename_for", "normalize_digest"]

_DIGEST = re.compile(r"sha256[:-]([0-9a-f]{64})")


def normalize_digest(text: str) -> str:
    """Validate a digest in either form and return it as ``sha256:<hex>``.

    >>> normalize_digest("sha256-" + "a" * 64) == "sha256:" + "a" * 64
    True
    >>> normalize_digest("sha256:xyz")
    Traceback (most recent call last):
    ...
    nbllm.errors.InvalidRequest: invalid digest format
    """
    m = _DIGEST.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise InvalidRequest("invalid digest format")
    return f"sha256:{m.group(1)}"


def filename_for(digest: str) -> str:
    """The blob file name of a digest.

    >>> filename_for("sha256:" + "0" * 64) == "sha256-" + "0" * 64
    True
    """
    return normalize_digest(digest).replace(":", "-", 1)


def digest_from_filename(name: str) -> str | None:
    """The digest a blob file name stands for, or None for anything else (partials, temp files)."""
    m = _DIGEST.fullmatch(name)
    return f"sha256:{m.group(1)}" if m else None


def digest_bytes(data: bytes) -> str:
    """Digest of some bytes.

    >>> digest_bytes(b"")
    'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
    """
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_file(path: Path) -> str:
    """Digest of a file's contents, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return "sha256:" + h.hexdigest()
