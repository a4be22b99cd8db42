"""Thinking models: the request's ``think`` value, the tags a template wraps thinking in, and the
streaming parser that splits a model's output into thinking and content.

Follows Ollama's ``api.ThinkValue`` (``api/types.go``), ``thinking.InferTags`` (``thinking/template.go``)
and ``thinking.Parser`` (``thinking/parser.go``): a model can think when its template renders
``.Thinking`` of the ``.Messages`` it ranges over between two literal tags; the parser takes what the
model writes between those tags as thinking, eating the whitespace around them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final, TypeAlias

from nbllm.errors import InvalidRequest
from nbllm.prompt.gotemplate import (
    ActionNode,
    BranchNode,
    CommandNode,
    FieldNode,
    GoTemplate,
    ListNode,
    Node,
    PipeNode,
    TemplateNode,
    TextNode,
)

__all__ = [
    "THINK_LEVELS",
    "ThinkValue",
    "ThinkingParser",
    "check_think",
    "infer_tags",
    "jinja_tags",
    "split_thinking",
    "think_level",
    "think_on",
]

THINK_LEVELS: Final = ("high", "medium", "low", "max")
"""The levels ``think`` takes besides true and false."""
ThinkValue: TypeAlias = bool | str | None
"""A request's ``think``: on/off, a level, or not set."""
_JINJA_TAGS: Final = (("<think>", "</think>"), ("<thinking>", "</thinking>"))


def check_think(value: object) -> ThinkValue:
    """A request's ``think``, or a 400 in Ollama's words for one it does not take.

    >>> check_think(True), check_think("low"), check_think(None)
    (True, 'low', None)
    >>> check_think("loud")
    Traceback (most recent call last):
    ...
    nbllm.errors.InvalidRequest: invalid think value: "loud" (must be "high", "medium", "low", "max", true, or false)
    """
    if value is None or isinstance(value, bool) or value in THINK_LEVELS:
        return value
    if isinstance(value, str):
        raise InvalidRequest(f'invalid think value: "{value}" (must be "high", "medium", "low", "max", true, or false)')
    raise InvalidRequest('think must be a boolean or string ("high", "medium", "low", "max", true, or false)')


def think_on(value: ThinkValue) -> bool:
    """Whether ``think`` turns thinking on (Ollama's ``ThinkValue.Bool``): true or any level.

    >>> think_on(True), think_on("high"), think_on(False), think_on(None)
    (True, True, False, False)
    """
    return value is True or value in THINK_LEVELS


def think_level(value: ThinkValue) -> str:
    """``.ThinkLevel`` (Ollama's ``ThinkValue.String``): the level, ``medium`` for true, else empty.

    >>> think_level(True), think_level("low"), think_level(False), think_level(None)
    ('medium', 'low', '', '')
    """
    if isinstance(value, str):
        return value
    return "medium" if value else ""


# ---------------------------------------------------------------- the tags, from the template


def _children(node: Node) -> list[Node]:
    """The nodes Ollama's ``templateVisit`` walks into (the pipeline of a branch first)."""
    if isinstance(node, ListNode):
        return list(node.nodes)
    if isinstance(node, BranchNode):
        return [node.pipe, node.body, *([node.else_body] if node.else_body is not None else [])]
    if isinstance(node, ActionNode):
        return [node.pipe]
    if isinstance(node, TemplateNode):
        return [node.pipe] if node.pipe is not None else []
    if isinstance(node, PipeNode):
        return list(node.cmds)
    if isinstance(node, CommandNode):
        return list(node.args)
    return []


def _visit(node: Node, enter: Callable[[Node, list[Node]], None], ancestors: list[Node]) -> None:
    ancestors.append(node)
    enter(node, ancestors)
    for child in _children(node):
        _visit(child, enter, ancestors)
    ancestors.pop()


def _range_uses(branch: BranchNode, field: str) -> bool:
    found: list[bool] = []
    _visit(branch.pipe, lambda n, _: found.append(isinstance(n, FieldNode) and n.ident[:1] == [field]), [])
    return any(found)


def infer_tags(template: GoTemplate) -> tuple[str, str]:
    """The opening and closing thinking tags of a Go template (empty when it has none).

    Ollama's heuristic: a ``.Thinking`` inside a ``range`` over ``.Messages``; the nearest list around
    it starting and ending with text gives the tags (the last such field wins).

    >>> turn = "{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}"
    >>> infer_tags(GoTemplate("{{ range .Messages }}" + turn + "{{ end }}"))
    ('<think>', '</think>')
    >>> infer_tags(GoTemplate("{{ .Prompt }}"))
    ('', '')
    """
    tags = ["", ""]

    def enter(node: Node, ancestors: list[Node]) -> None:
        if not (isinstance(node, FieldNode) and node.ident[:1] == ["Thinking"]):
            return
        ranges = [a for a in ancestors if isinstance(a, BranchNode) and a.kind == "range"]
        if not ranges or not _range_uses(ranges[-1], "Messages"):
            return
        lists = [a for a in ancestors if isinstance(a, ListNode)]
        if lists and lists[-1].nodes:
            first, last = lists[-1].nodes[0], lists[-1].nodes[-1]
            tags[0] = first.text.strip() if isinstance(first, TextNode) else ""
            tags[1] = last.text.strip() if isinstance(last, TextNode) else ""

    _visit(template.root, enter, [])
    return tags[0], tags[1]


def jinja_tags(source: str) -> tuple[str, str]:
    """The thinking tags of a Hugging Face chat template: a known pair it writes (Ollama reads no Jinja).

    >>> jinja_tags("{% if enable_thinking %}<think>\\n{% endif %}...{{ c.split('</think>')[-1] }}")
    ('<think>', '</think>')
    """
    for opening, closing in _JINJA_TAGS:
        if opening in source and closing in source:
            return opening, closing
    return "", ""


# ---------------------------------------------------------------- the parser


class _State(enum.Enum):
    LOOKING = enum.auto()  # before the opening tag: only whitespace (or part of the tag) so far
    STARTED = enum.auto()  # after the opening tag, eating whitespace
    THINKING = enum.auto()  # inside the thinking
    ENDED = enum.auto()  # after the closing tag, eating whitespace
    DONE = enum.auto()  # content


class ThinkingParser:
    """Splits a model's streamed output into (thinking, content), as Ollama's ``thinking.Parser``.

    Text that could still be the start of a tag is held back until it is decided; ``finish`` hands
    out what is left when the model stops (an unclosed thinking stays thinking).

    >>> p = ThinkingParser("<think>", "</think>")
    >>> [p.feed(t) for t in ("<thi", "nk>Hm, 2", "+2.</th", "ink>\\n\\nFour")]
    [('', ''), ('Hm, 2', ''), ('+2.', ''), ('', 'Four')]
    """

    def __init__(self, opening: str, closing: str) -> None:
        self.opening = opening
        self.closing = closing
        self._state = _State.LOOKING
        self._acc = ""

    @property
    def thinking(self) -> bool:
        """Whether the output so far is inside the thinking (or may still open it)."""
        return self._state in (_State.LOOKING, _State.STARTED, _State.THINKING)

    def feed(self, text: str) -> tuple[str, str]:
        """Thinking and content that ``text`` makes certain (held-back text included)."""
        self._acc += text
        thinking, content = [], []
        more = True
        while more:
            think, answer, more = self._eat()
            thinking.append(think)
            content.append(answer)
        return "".join(thinking), "".join(content)

    def finish(self) -> tuple[str, str]:
        """What is still held back when the output ends: a part of a tag is text after all."""
        rest, self._acc = self._acc, ""
        if self._state is _State.THINKING:
            return rest, ""
        if self._state is _State.LOOKING:
            self._state = _State.DONE
            return "", rest
        return "", rest if self._state is _State.DONE else ""

    def _eat(self) -> tuple[str, str, bool]:
        acc = self._acc
        if self._state is _State.LOOKING:
            trimmed = acc.lstrip()
            if trimmed.startswith(self.opening):
                self._acc = trimmed[len(self.opening) :].lstrip()
                self._state = _State.THINKING if self._acc else _State.STARTED
                return "", "", True
            if not trimmed or self.opening.startswith(trimmed):
                return "", "", False  # whitespace or a part of the tag: wait for more
            self._state, self._acc = _State.DONE, ""
            return "", acc, False  # no thinking: the content keeps its whitespace
        if self._state is _State.STARTED:
            self._acc = acc.lstrip()
            if not self._acc:
                return "", "", False
            self._state = _State.THINKING
            return "", "", True
        if self._state is _State.THINKING:
            if self.closing in acc:
                thinking, _, rest = acc.partition(self.closing)
                rest = rest.lstrip()
                self._acc = ""
                self._state = _State.DONE if rest else _State.ENDED
                return thinking, rest, False
            keep = _overlap(acc, self.closing)
            self._acc = acc[len(acc) - keep :] if keep else ""
            return acc[: len(acc) - keep], "", False
        self._acc = ""
        if self._state is _State.ENDED:
            acc = acc.lstrip()
            if acc:
                self._state = _State.DONE
        return "", acc, False


def _overlap(text: str, tag: str) -> int:
    """The length of the longest end of ``text`` that begins ``tag``.

    >>> _overlap("abc</th", "</think>"), _overlap("abc", "</think>")
    (4, 0)
    """
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def split_thinking(text: str, opening: str, closing: str) -> tuple[str, str]:
    """The thinking and the content of a whole text (Ollama strips earlier turns' thinking so).

    >>> split_thinking("<think> hm </think> Four", "<think>", "</think>")
    ('hm ', 'Four')
    """
    parser = ThinkingParser(opening, closing)
    thinking, content = parser.feed(text)
    more_thinking, more_content = parser.finish()
    return thinking + more_thinking, content + more_content
