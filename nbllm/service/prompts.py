"""From a request to the exact prompt text a model sees, and what a model can do (capabilities).

A model's template is its template layer (a Go template, as Ollama models carry), else the Jinja
chat template inside its GGUF, else Ollama's default ``{{ .Prompt }}``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nbllm.errors import InvalidRequest, TemplateError
from nbllm.prompt.gotemplate import GoTemplate
from nbllm.prompt.jinja import JinjaChatTemplate
from nbllm.prompt.ollama_template import render_generate, render_messages
from nbllm.store import LocalModel
from nbllm.store.gguf import GGUFInfo

__all__ = ["ModelTemplate", "capabilities", "model_template"]

DEFAULT_TEMPLATE = "{{ .Prompt }}"


@functools.lru_cache(maxsize=64)
def _go(source: str) -> GoTemplate:
    return GoTemplate(source)


@dataclass(frozen=True)
class ModelTemplate:
    """The template a model renders prompts with."""

    go: GoTemplate | None
    jinja: JinjaChatTemplate | None

    @property
    def supports_tools(self) -> bool:
        """Whether the template renders tools."""
        if self.go is not None:
            return "tools" in self.go.vars()
        return self.jinja is not None and self.jinja.supports_tools

    @property
    def supports_insert(self) -> bool:
        """Whether the template renders a suffix (fill in the middle)."""
        return self.go is not None and "suffix" in self.go.vars()

    @property
    def supports_thinking(self) -> bool:
        """Whether the template switches thinking on and off."""
        return self.go is not None and "think" in self.go.vars()

    def chat(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None) -> str:
        """Prompt for a conversation."""
        if self.go is not None:
            return render_messages(self.go, messages, tools=tools)
        assert self.jinja is not None
        return self.jinja.render(messages, tools=tools)

    def generate(
        self, prompt: str, *, system: str | None, suffix: str | None, messages: Sequence[Mapping[str, Any]]
    ) -> str:
        """Prompt for a completion request (``messages`` are the model's MESSAGE lines)."""
        if self.go is not None:
            return render_generate(self.go, prompt=prompt, system=system, suffix=suffix, model_messages=messages)
        assert self.jinja is not None
        msgs = ([{"role": "system", "content": system}] if system else []) + list(messages)
        return self.jinja.render([*msgs, {"role": "user", "content": prompt}])


def model_template(model: LocalModel, info: GGUFInfo, override: str | None = None) -> ModelTemplate:
    """The template of a model (or the request's ``template`` override)."""
    if override:  # the request's own template: one that does not parse is the request's error (400)
        try:
            return ModelTemplate(go=_go(override), jinja=None)
        except TemplateError as exc:
            raise InvalidRequest(f"invalid template: {exc.message}") from None
    if model.template:
        return ModelTemplate(go=_go(model.template), jinja=None)
    source = info.chat_template
    if source:
        specials = info.token_texts
        jinja = JinjaChatTemplate(source, bos_token=specials.get("bos", ""), eos_token=specials.get("eos", ""))
        return ModelTemplate(go=None, jinja=jinja)
    return ModelTemplate(go=_go(DEFAULT_TEMPLATE), jinja=None)


def capabilities(model: LocalModel, info: GGUFInfo) -> list[str]:
    """What a model can do, as Ollama reports it: completion/embedding, tools, insert, vision, thinking."""
    caps = ["embedding"] if info.is_embedding_model else ["completion"]
    if not info.is_embedding_model:
        template = model_template(model, info)
        if template.supports_tools:
            caps.append("tools")
        if template.supports_insert:
            caps.append("insert")
        if template.supports_thinking:
            caps.append("thinking")
    if model.projector is not None:
        caps.append("vision")
    return caps
