"""Who may read the model store: nbllm makes its files ``0600`` and its directories ``0700``.

A store holds whatever was uploaded to it (a Modelfile's ``FROM`` can name any file) and the
system prompts and licences of private models, so what nbllm writes is readable by the user that
runs it only, whatever the umask. Directories that exist already keep their modes: a store that
Ollama (or an administrator) made, perhaps shared with a group on purpose, goes on working as it is.
Ollama writes ``0644`` files; docs/security.md says how to share a store.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "make_private_dirs"]

FILE_MODE = 0o600
"""Mode of every blob, manifest and partial download nbllm writes."""
DIR_MODE = 0o700
"""Mode of every directory of the store nbllm creates."""


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, each new one ``0700`` (existing ones are left alone)."""
    missing = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        directory.mkdir(mode=DIR_MODE, exist_ok=True)
