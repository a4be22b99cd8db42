"""Chat templates embedded in GGUF files (Hugging Face Jinja), rendered in a sandbox."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from nbllm.errors import TemplateError

__all__ = ["JinjaChatTemplate", "compile_template"]


def _raise(message: str) -> None:
    raise TemplateError(f"chat template: {message}")


def _tojson(
    value: Any,
    indent: int | None = None,
    *,
    ensure_ascii: bool = False,
    sort_keys: bool = False,
    separators: tuple[str, str] | None = None,
) -> str:
    # transformers' tojson: no HTML escaping, unicode kept (templates print tool schemas with it)
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys, separators=separators)


@functools.cache
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, loader=jinja2.BaseLoader())
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


_COMPILED_TEMPLATES = 32
"""How many distinct template texts stay compiled (a model has one; a server holds a few models)."""


@functools.lru_cache(maxsize=_COMPILED_TEMPLATES)
def compile_template(source: str) -> jinja2.Template:
    """``source`` compiled once and reused while it stays among the recently used; TemplateError if invalid.

    Every request builds a :class:`JinjaChatTemplate` from the model's GGUF; compiling Jinja costs
    milliseconds a request, rendering a compiled template far less. A compiled template is immutable
    and safe to render from several threads at once.
    """
    try:
        return _environment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"chat template line {exc.lineno}: {exc.message}") from exc


class JinjaChatTemplate:
    """A ``tokenizer.chat_template`` as transformers renders it (``apply_chat_template``)."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        self._template = compile_template(source)
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token

    @property
    def supports_tools(self) -> bool:
        """Whether the template renders a ``tools`` variable."""
        return "tools" in self.source

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        """The prompt for ``messages`` (OpenAI-style dicts; tool call arguments as objects)."""
        try:
            return self._template.render(
                messages=[dict(m) for m in messages],
                tools=list(tools) if tools else None,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        except TemplateError:
            raise
        except jinja2.TemplateError as exc:
            raise TemplateError(f"chat template: {exc}") from exc
        except Exception as exc:  # a template calling a method on the wrong type, say
            raise TemplateError(f"chat template failed: {exc}") from exc
