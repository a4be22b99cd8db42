"""From a request to the exact prompt text a model sees, and what a model can do (capabilities).

A model's template is its template layer (a Go template, as Ollama models carry), else the Jinja
chat template inside its GGUF, else Ollama's default ``{{ .Prompt }}``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nbllm.errors import InvalidRequest, TemplateError
from nbllm.prompt.gotemplate import GoTemplate
from nbllm.prompt.jinja import JinjaChatTemplate
from nbllm.prompt.ollama_template import render_generate, render_messages
from nbllm.store import LocalModel
from nbllm.store.gguf import GGUFInfo

__all__ = ["ModelTemplate", "capabilities", "model_template"]

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "{{ .Prompt }}"


@functools.lru_cache(maxsize=64)
def _go(source: str) -> GoTemplate:
    return GoTemplate(source)


@contextlib.contextmanager
def _render_errors(*, override: bool) -> Iterator[None]:
    """A template that fails on this request is a 400 that says so (create refuses such templates; a model
    made elsewhere, or a template that fails only on some messages, can still have one)."""
    try:
        yield
    except TemplateError as exc:
        if override:
            raise InvalidRequest(f"invalid template: {exc.message}") from None
        raise InvalidRequest(
            f"the model's template failed on this request: {exc.message} (fix its TEMPLATE and create the model again)"
        ) from None


@dataclass(frozen=True)
class ModelTemplate:
    """The template a model renders prompts with."""

    go: GoTemplate | None
    jinja: JinjaChatTemplate | None
    override: bool = False
    """Whether this is the request's own ``template``, not the model's."""

    def _vars(self) -> frozenset[str]:
        """The Go template's names; none for one that cannot list them (rendering it then says why)."""
        if self.go is None:
            return frozenset()
        try:
            return self.go.vars()
        except TemplateError:
            return frozenset()

    @property
    def supports_tools(self) -> bool:
        """Whether the template renders tools."""
        if self.go is not None:
            return "tools" in self._vars()
        return self.jinja is not None and self.jinja.supports_tools

    @property
    def supports_insert(self) -> bool:
        """Whether the template renders a suffix (fill in the middle)."""
        return "suffix" in self._vars()

    @property
    def supports_thinking(self) -> bool:
        """Whether the template switches thinking on and off."""
        return "think" in self._vars()

    def chat(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None) -> str:
        """Prompt for a conversation."""
        with _render_errors(override=self.override):
            if self.go is not None:
                return render_messages(self.go, messages, tools=tools)
            assert self.jinja is not None
            return self.jinja.render(messages, tools=tools)

    def generate(
        self, prompt: str, *, system: str | None, suffix: str | None, messages: Sequence[Mapping[str, Any]]
    ) -> str:
        """Prompt for a completion request (``messages`` are the model's MESSAGE lines)."""
        with _render_errors(override=self.override):
            if self.go is not None:
                return render_generate(self.go, prompt=prompt, system=system, suffix=suffix, model_messages=messages)
            assert self.jinja is not None
            msgs = ([{"role": "system", "content": system}] if system else []) + list(messages)
            return self.jinja.render([*msgs, {"role": "user", "content": prompt}])


def model_template(model: LocalModel, info: GGUFInfo, override: str | None = None) -> ModelTemplate:
    """The template of a model (or the request's ``template`` override)."""
    if override:  # the request's own template: one that does not parse is the request's error (400)
        try:
            return ModelTemplate(go=_go(override), jinja=None, override=True)
        except TemplateError as exc:
            raise InvalidRequest(f"invalid template: {exc.message}") from None
    with _render_errors(override=False):  # the model's own template does not parse: a 400 that says so
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
        try:
            template = model_template(model, info)
            caps += [
                cap
                for cap, has in (
                    ("tools", template.supports_tools),
                    ("insert", template.supports_insert),
                    ("thinking", template.supports_thinking),
                )
                if has
            ]
        except InvalidRequest as exc:  # a broken template: what it could do is unknown; chat says why
            log.warning("the template of %s does not work: %s", model.name, exc.message)
    if model.projector is not None:
        caps.append("vision")
    return caps
