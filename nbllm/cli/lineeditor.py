"""The REPL's line editor: prompt_toolkit with Ollama's prompts, placeholder, keys and history file."""

from __future__ import annotations

import logging
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

__all__ = ["LineReader"]

log = logging.getLogger(__name__)

_PLACEHOLDER = "Send a message (/? for help)"
_ALT_PLACEHOLDER = "Press Enter to send"


class _SwitchableHistory(FileHistory):
    """A history file that ``/set nohistory`` stops writing to (lines stay recallable in this session)."""

    def __init__(self, path: Path, *, enabled: bool) -> None:
        super().__init__(str(path))
        self.enabled = enabled

    def store_string(self, string: str) -> None:
        if not self.enabled:
            return
        try:
            super().store_string(string)
        except OSError as exc:
            log.warning("history not saved: %s", exc)
            self.enabled = False


class LineReader:
    """Reads lines at ``>>> `` (``... `` inside a multi-line message); Ctrl-D is EOFError, Ctrl-C KeyboardInterrupt.

    Emacs keys as in Ollama (Ctrl-A/E/K/U/W, Alt-B/F, Ctrl-L), Ctrl-G edits the line in $VISUAL/$EDITOR,
    bracketed paste. History lives in ``history_path`` unless ``history`` is off.
    """

    def __init__(self, history_path: Path | None, *, history: bool = True) -> None:
        self.history: _SwitchableHistory | InMemoryHistory
        if history_path is not None:
            history_path.parent.mkdir(parents=True, exist_ok=True)
            self.history = _SwitchableHistory(history_path, enabled=history)
        else:
            self.history = InMemoryHistory()
        keys = KeyBindings()

        @keys.add("c-g")
        def _edit(event: KeyPressEvent) -> None:
            event.current_buffer.open_in_editor()

        self.session: PromptSession[str] = PromptSession(history=self.history, key_bindings=keys)

    def set_history(self, *, enabled: bool) -> None:
        """``/set history`` and ``/set nohistory``."""
        if isinstance(self.history, _SwitchableHistory):
            self.history.enabled = enabled

    def read(self, *, alt: bool = False) -> str:
        """One line of input."""
        text = _ALT_PLACEHOLDER if alt else _PLACEHOLDER
        return self.session.prompt("... " if alt else ">>> ", placeholder=FormattedText([("fg:ansibrightblack", text)]))
