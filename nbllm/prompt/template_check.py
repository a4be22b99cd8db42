"""Is a Go chat template usable? Parsed, then rendered once with sample values, before a model keeps it.

Go's text/template finds some errors only when it runs: ``{{ template "nope" . }}`` parses, and fails
on every request. ``create`` calls :func:`check_template` so that such a template is the request's
error (400) at once, not a failure of every later chat, generate and show.
"""

from __future__ import annotations

from typing import Any

from nbllm.prompt.ollama_template import execute, parse_template

__all__ = ["check_template"]

_MESSAGES: tuple[dict[str, Any], ...] = (
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi. How can I help?"},
    {"role": "user", "content": "What is 2 + 2?"},
)
_TOOLS: tuple[dict[str, Any], ...] = (
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two numbers",
            "parameters": {
                "type": "object",
                "required": ["a", "b"],
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            },
        },
    },
)


def check_template(source: str) -> None:
    """Raise TemplateError unless ``source`` parses and renders a sample conversation (and tools, a
    suffix, thinking -- whichever of them it uses).

    >>> check_template("{{ range .Messages }}{{ .Role }}: {{ .Content }}\\n{{ end }}")
    >>> check_template('{{ template "nope" . }}')
    Traceback (most recent call last):
    ...
    nbllm.errors.TemplateError: template: 1:4: executing at <{{template "nope" .}}>: template "nope" not defined
    """
    template = parse_template(source)
    names = template.vars()
    execute(template, messages=_MESSAGES)
    if "tools" in names:
        execute(template, messages=_MESSAGES, tools=_TOOLS)
    if "suffix" in names:
        execute(template, prompt="def add(a, b):", suffix="    return c")
    if "think" in names:
        execute(template, messages=_MESSAGES, think=True, is_think_set=True)
