"""Modelfiles: Ollama's grammar parsed (with its error messages), written back, and rendered from a stored model.

The grammar (``parser/parser.go`` in Ollama): one instruction per line, case-insensitive, ``#``
comments, values running to the end of the line unless opened with ``"`` or ``\"\"\"``, which
may span lines. ``PARAMETER name value`` and ``MESSAGE role text`` take a word first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nbllm.errors import InvalidRequest
from nbllm.store.local import LocalModel

__all__ = [
    "INSTRUCTIONS",
    "Command",
    "Modelfile",
    "format_parameters",
    "parse_modelfile",
    "quote_value",
    "render_modelfile",
]

INSTRUCTIONS = (
    "from",
    "license",
    "template",
    "system",
    "adapter",
    "draft",
    "renderer",
    "parser",
    "parameter",
    "message",
    "requires",
)
"""Every instruction a Modelfile may hold, lower case."""
MESSAGE_ROLES = ("system", "user", "assistant")

_INVALID_COMMAND = (
    'command must be one of "from", "license", "template", "system", "adapter", "draft", "renderer", '
    '"parser", "parameter", "message", or "requires"'
)
_INVALID_ROLE = 'message role must be one of "system", "user", or "assistant"'


@dataclass(frozen=True)
class Command:
    """One instruction: ``instruction`` is lower case; ``key`` is the parameter name or message role."""

    instruction: str
    value: str
    key: str = ""

    def render(self) -> str:
        """The Modelfile line(s) of this command."""
        if self.instruction == "from":
            return f"FROM {self.value}"
        if self.instruction in ("parameter", "message"):
            return f"{self.instruction.upper()} {self.key} {quote_value(self.value)}"
        return f"{self.instruction.upper()} {quote_value(self.value)}"


@dataclass(frozen=True)
class Modelfile:
    """A parsed Modelfile: its commands in order."""

    commands: tuple[Command, ...] = field(default_factory=tuple)

    def of(self, instruction: str) -> list[Command]:
        """The commands of one instruction, in order."""
        return [c for c in self.commands if c.instruction == instruction]

    def render(self) -> str:
        """The Modelfile text (parsing it gives these commands back)."""
        return "".join(c.render() + "\n" for c in self.commands)


def _error(line: int, message: str) -> InvalidRequest:
    return InvalidRequest(f"(line {line}): {message}")


def _unquote(text: str) -> tuple[str, bool]:
    """Strip one level of ``\"\"\"`` or ``"`` quotes; False while a quote is still open."""
    if text.startswith('"""'):
        if len(text) >= 6 and text.endswith('"""'):
            return text[3:-3], True
        return "", False
    if text.startswith('"'):
        if len(text) >= 2 and text.endswith('"'):
            return text[1:-1], True
        return "", False
    return text, True


class _Parser:
    """Ollama's Modelfile state machine, one character at a time."""

    NIL, NAME, VALUE, PARAMETER, MESSAGE, COMMENT = range(6)

    def __init__(self) -> None:
        self.state = self.NIL
        self.line = 1
        self.buf: list[str] = []
        self.instruction = ""
        self.key = ""
        self.commands: list[Command] = []

    def next_state(self, ch: str) -> tuple[int, str]:
        """The state ``ch`` leads to, and the character to keep ('' drops it)."""
        space, newline = ch in " \t", ch in "\r\n"
        state = self.state
        if state == self.NIL:
            if ch == "#":
                return self.COMMENT, ""
            return (self.NIL, "") if space or newline else (self.NAME, ch)
        if state == self.NAME:
            if ch.isascii() and ch.isalpha():
                return self.NAME, ch
            if space:
                return self.VALUE, ""
            raise _error(self.line, _INVALID_COMMAND)
        if state == self.VALUE:
            return (self.NIL, ch) if space or newline else (self.VALUE, ch)
        if state in (self.PARAMETER, self.MESSAGE):
            word = ch.isascii() and (ch.isalpha() or (state == self.PARAMETER and (ch.isdigit() or ch == "_")))
            if word:
                return state, ch
            if space:
                return self.VALUE, ""
            raise InvalidRequest(f"unexpected EOF: {''.join(self.buf)}")
        return (self.NIL, "") if newline else (self.COMMENT, "")

    def feed(self, ch: str, prev: str) -> None:
        """Consume one character."""
        if (ch == "\n" and prev != "\r") or ch == "\r":
            self.line += 1
        nxt, keep = self.next_state(ch)
        if nxt != self.state:
            text = "".join(self.buf)
            if self.state == self.NAME:
                nxt = self._instruction(text, nxt)
            elif self.state == self.PARAMETER:
                self.key = text
            elif self.state == self.MESSAGE:
                if text not in MESSAGE_ROLES:
                    raise _error(self.line, _INVALID_ROLE)
                self.key = text
            elif self.state == self.VALUE:
                value, complete = _unquote(text.strip())
                if not complete or ch in " \t":
                    self.buf.append(keep)  # a space or an open quote: the value goes on
                    return
                self._emit(value)
            self.buf.clear()
            self.state = nxt
        if keep and keep.isprintable():
            self.buf.append(keep)

    def _instruction(self, word: str, nxt: int) -> int:
        lower = word.lower()
        if lower not in INSTRUCTIONS:
            raise _error(self.line, _INVALID_COMMAND)
        self.instruction = lower
        self.key = ""
        return {"parameter": self.PARAMETER, "message": self.MESSAGE}.get(lower, nxt)

    def _emit(self, value: str) -> None:
        self.commands.append(Command(self.instruction, value, self.key))

    def finish(self) -> Modelfile:
        """End of input: flush the last value and check there is a FROM."""
        if self.state == self.VALUE:
            value, complete = _unquote("".join(self.buf).strip())
            if not complete:
                raise InvalidRequest("unexpected EOF")
            self._emit(value)
        elif self.state not in (self.NIL, self.COMMENT):
            raise InvalidRequest("unexpected EOF")
        if not any(c.instruction == "from" for c in self.commands):
            raise InvalidRequest("no FROM line")
        return Modelfile(tuple(self.commands))


def parse_modelfile(text: str) -> Modelfile:
    """Parse a Modelfile; errors carry Ollama's wording (``no FROM line``, ``(line 3): command must be ...``).

    >>> mf = parse_modelfile('FROM llama3.2\\nparameter temperature 0.5\\nSYSTEM \"\"\"Be\\nbrief.\"\"\"\\n')
    >>> [(c.instruction, c.key, c.value) for c in mf.commands]
    [('from', '', 'llama3.2'), ('parameter', 'temperature', '0.5'), ('system', '', 'Be\\nbrief.')]
    >>> parse_modelfile("SYSTEM hi")
    Traceback (most recent call last):
    ...
    nbllm.errors.InvalidRequest: no FROM line
    """
    parser = _Parser()
    prev = ""
    for ch in text.removeprefix("\ufeff"):
        parser.feed(ch, prev)
        prev = ch
    return parser.finish()


def quote_value(text: str) -> str:
    """A Modelfile value that parses back to ``text``: bare when it can be, else quoted.

    >>> quote_value("hello world")
    'hello world'
    >>> quote_value('line1\\nline2')
    '\"line1\\nline2\"'
    >>> quote_value('say "hi"\\n')
    '\"\"\"say \"hi\"\\n\"\"\"'
    """
    bare = text and "\n" not in text and "\r" not in text and text == text.strip() and not text.startswith('"')
    if bare:
        return text
    if '"' in text:
        return f'"""{text}"""'
    return f'"{text}"'


def _param_values(value: Any) -> list[str]:
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        if isinstance(item, bool):
            out.append("true" if item else "false")
        elif isinstance(item, float) and item.is_integer():
            out.append(str(int(item)))
        else:
            out.append(str(item))
    return out


def format_parameters(params: Mapping[str, Any]) -> str:
    """Parameters as ``ollama show`` prints them: name padded to 30, Go-quoted strings, one line per value.

    >>> print(format_parameters({"stop": ["<|im_end|>"], "temperature": 0.2}))
    stop                           "<|im_end|>"
    temperature                    0.2
    """
    lines = []
    for name, value in params.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            shown = json.dumps(item) if isinstance(item, str) else _param_values(item)[0]
            lines.append(f"{name:<30} {shown}")
    return "\n".join(lines)


def render_modelfile(
    model: LocalModel,
    *,
    template: str | None = None,
    system: str | None = None,
    params: Mapping[str, Any] | None = None,
    messages: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """A Modelfile that recreates ``model`` (``FROM`` the weights blob), as ``ollama show --modelfile``."""
    lines = [
        '# Modelfile generated by "ollama show"',
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {model.name.display}",
        "",
        f"FROM {model.model_path}" if model.model_path else f"FROM {model.name.display}",
    ]
    lines += [f"ADAPTER {adapter}" for adapter in model.adapters]
    if model.draft is not None:
        lines.append(f"DRAFT {model.draft}")
    if model.projector is not None:
        lines.append(f"FROM {model.projector}")  # Ollama lists a vision projector as a second FROM
    template = model.template if template is None else template
    if template:
        lines.append(f"TEMPLATE {_long_text(template)}")
    system = model.system if system is None else system
    if system:
        lines.append(f"SYSTEM {_long_text(system)}")
    for name, value in (model.params if params is None else params).items():
        lines += [Command("parameter", item, name).render() for item in _param_values(value)]
    for message in model.messages if messages is None else messages:
        lines.append(Command("message", str(message.get("content", "")), str(message.get("role", "user"))).render())
    lines += [f"LICENSE {_long_text(text)}" for text in model.license]
    if model.config.get("requires"):
        lines.append(f"REQUIRES {model.config['requires']}")
    return "\n".join(lines) + "\n"


def _long_text(text: str) -> str:
    """Templates, system prompts and licenses go in triple quotes, as ``ollama show`` has long written them.

    The grammar has no escapes: a text with a line ending in triple quotes cannot be written (nor in Ollama).
    """
    return f'"""{text}"""'
