"""Saved conversations: a ``%%chat --thread NAME --persist`` thread in ``<NBLLM_HOME>/threads/NAME.json``.

A file holds what continuing the conversation needs: the model, the options and ``think`` that shape its
prompt, the host it was held with, and the messages (the system prompt first, when one was given). It is
written as the store writes manifests (temporary file, fsync, rename, fsync of the directory), so a
crash at any moment leaves the previous exchange or the new one, never half of a file. A name is one
path component of letters, digits, ``.``, ``_`` and ``-`` (at most :data:`MAX_NAME` characters,
starting with a letter or digit): it can never reach outside the folder. A file that is not one of
ours, or is damaged, is refused with a :class:`ThreadError` saying which, and never overwritten.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from nbllm.errors import NbllmError
from nbllm.schema import Message
from nbllm.store.blobs import write_atomic
from nbllm.store.permissions import make_private_dirs

__all__ = ["FORMAT", "MAX_NAME", "SavedThread", "ThreadError", "ThreadStore", "check_name"]

FORMAT = "nbllm.thread/1"
"""The ``format`` field of a thread file (a file without it, or with another, is not read)."""
MAX_NAME = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SUFFIX = ".json"


class ThreadError(NbllmError):
    """A thread name that is not allowed, or a thread file that cannot be read."""


def check_name(name: str) -> str:
    """``name`` if it can name a thread file, else a ThreadError saying what is allowed."""
    if not name or len(name) > MAX_NAME or _NAME.fullmatch(name) is None:
        shown = repr(name if len(name) <= MAX_NAME else name[:MAX_NAME] + "…")
        raise ThreadError(
            f"invalid thread name {shown}: use up to {MAX_NAME} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class SavedThread:
    """A saved conversation and the settings that continue it."""

    name: str
    model: str
    messages: tuple[Message, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    think: bool | str | None = None
    host: str | None = None
    updated: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def turns(self) -> int:
        """User messages so far."""
        return sum(1 for m in self.messages if m.role == "user")

    def to_json(self) -> bytes:
        """The file's bytes."""
        doc = {
            "format": FORMAT,
            "name": self.name,
            "model": self.model,
            "options": {k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()},
            "think": self.think,
            "host": self.host,
            "updated": self.updated.isoformat(),
            "messages": [m.model_dump(mode="json", exclude_none=True) for m in self.messages],
        }
        return json.dumps(doc, ensure_ascii=False, indent=1).encode() + b"\n"

    @classmethod
    def from_json(cls, name: str, raw: bytes) -> SavedThread:
        """Parse a file's bytes; ValueError saying what is wrong."""
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise ValueError(f"not an nbllm thread file (format {found!r}, expected {FORMAT!r})")
        model, options, messages = doc.get("model"), doc.get("options", {}), doc.get("messages")
        if not isinstance(model, str) or not model or not isinstance(options, dict) or not isinstance(messages, list):
            raise ValueError("'model', 'options' or 'messages' is missing or of the wrong type")
        think = doc.get("think")
        if think is not None and not isinstance(think, (bool, str)):
            raise ValueError("'think' is of the wrong type")
        try:
            parsed = tuple(Message.model_validate(m) for m in messages)
            updated = datetime.fromisoformat(str(doc.get("updated")))
        except (ValidationError, ValueError) as exc:
            raise ValueError(f"a message or the date is malformed ({str(exc).splitlines()[0]})") from None
        host = doc.get("host")
        return cls(name, model, parsed, options, think, host if isinstance(host, str) else None, updated)


class ThreadStore:
    """The thread files under one folder (``<NBLLM_HOME>/threads``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        """The file of thread ``name`` (the name checked first)."""
        return self.root / f"{check_name(name)}{SUFFIX}"

    def load(self, name: str) -> SavedThread | None:
        """The saved thread, None if there is none; ThreadError for a file that cannot be read."""
        path = self.path(name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ThreadError(f"cannot read thread {name!r} ({path}): {exc.strerror or exc}") from None
        try:
            return SavedThread.from_json(name, raw)
        except ValueError as exc:
            raise ThreadError(
                f"thread file {path} is damaged or not nbllm's: {exc}; it is left as it is "
                f"(move it away, or delete it with %threads --delete {name})"
            ) from None

    def save(self, thread: SavedThread) -> Path:
        """Write a thread atomically; a file there that is not a readable thread is refused, not replaced."""
        self.load(thread.name)
        target = self.path(thread.name)
        make_private_dirs(self.root)
        write_atomic(target, [thread.to_json()], f"thread {thread.name!r}")
        return target

    def delete(self, name: str) -> bool:
        """Remove a saved thread; False if there was none."""
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            return False
        return True

    def names(self) -> list[str]:
        """The names of the files in the folder that could be threads, sorted."""
        if not self.root.is_dir():
            return []
        names = (p.name.removesuffix(SUFFIX) for p in self.root.glob(f"*{SUFFIX}"))
        return sorted(n for n in names if _NAME.fullmatch(n) and len(n) <= MAX_NAME)

    def all(self) -> list[tuple[str, SavedThread | ThreadError]]:
        """Every saved thread by name, or the error of a file that cannot be read."""
        out: list[tuple[str, SavedThread | ThreadError]] = []
        for name in self.names():
            try:
                thread = self.load(name)
            except ThreadError as exc:
                out.append((name, exc))
                continue
            if thread is not None:
                out.append((name, thread))
        return out
