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
from nbllm.prompt.thinking import ThinkValue, infer_tags, jinja_tags, think_on
from nbllm.store import LocalModel
from nbllm.store.gguf import GGUFInfo

__all__ = ["ModelTemplate", "capabilities", "model_template"]

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "{{ .Prompt }}"


@functools.lru_cache(maxsize=64)
def _go(source: str) -> GoTemplate:
    return GoTemplate(source)


@functools.lru_cache(maxsize=16)
def _jinja(source: str, bos_token: str, eos_token: str) -> JinjaChatTemplate:
    """A compiled GGUF chat template (compiled once, not on every request)."""
    return JinjaChatTemplate(source, bos_token=bos_token, eos_token=eos_token)


@functools.lru_cache(maxsize=64)  # (by identity: parsed templates are cached above)
def _go_tags(template: GoTemplate) -> tuple[str, str]:
    return infer_tags(template)


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
    def thinking_tags(self) -> tuple[str, str]:
        """The tags the template wraps thinking in, as Ollama infers them (empty: not a thinking model)."""
        if self.go is not None:
            try:
                return _go_tags(self.go)
            except TemplateError:
                return "", ""
        return jinja_tags(self.jinja.source) if self.jinja is not None else ("", "")

    @property
    def supports_thinking(self) -> bool:
        """Whether the model thinks: its template renders earlier turns' thinking between two tags."""
        opening, closing = self.thinking_tags
        return bool(opening and closing)

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None,
        *,
        think: ThinkValue = None,
    ) -> str:
        """Prompt for a conversation (``think`` as the request resolved it: ``.Think``, ``.ThinkLevel``)."""
        with _render_errors(override=self.override):
            if self.go is not None:
                return render_messages(self.go, messages, tools=tools, think=think)
            assert self.jinja is not None
            return self.jinja.render(_jinja_messages(messages), tools=tools, **_jinja_think(think))

    def generate(
        self,
        prompt: str,
        *,
        system: str | None,
        suffix: str | None,
        messages: Sequence[Mapping[str, Any]],
        think: ThinkValue = None,
    ) -> str:
        """Prompt for a completion request (``messages`` are the model's MESSAGE lines)."""
        with _render_errors(override=self.override):
            if self.go is not None:
                return render_generate(
                    self.go, prompt=prompt, system=system, suffix=suffix, model_messages=messages, think=think
                )
            assert self.jinja is not None
            msgs = ([{"role": "system", "content": system}] if system else []) + list(messages)
            msgs.append({"role": "user", "content": prompt})
            return self.jinja.render(_jinja_messages(msgs), **_jinja_think(think))


def _jinja_messages(messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Messages for a Hugging Face template: an assistant's thinking is its ``reasoning_content`` too."""
    return [{**m, "reasoning_content": m["thinking"]} if m.get("thinking") else m for m in messages]


def _jinja_think(think: ThinkValue) -> dict[str, Any]:
    """``think`` in Hugging Face templates' terms (``enable_thinking``, ``reasoning_effort``), when set."""
    if think is None:
        return {}
    values: dict[str, Any] = {"enable_thinking": think_on(think)}
    if isinstance(think, str):
        values["reasoning_effort"] = think
    return values


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
            jinja = _jinja(source, specials.get("bos", ""), specials.get("eos", ""))
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
