"""service.prompts: which template a model renders with, what a broken one answers, and capabilities."""

from __future__ import annotations

import pytest

from nbllm.errors import InvalidRequest
from nbllm.runtime import Runtime
from nbllm.service.prompts import ModelTemplate, capabilities, model_template
from tests.service.conftest import AddModel

HELLO = [{"role": "user", "content": "Hello"}]
TOOLS = "{{ if .Tools }}tools: {{ json .Tools }}{{ end }}{{ range .Messages }}{{ .Content }}{{ end }}"


def _template(rt: Runtime, name: str, override: str | None = None) -> ModelTemplate:
    model = rt.store.get(name)
    return model_template(model, rt.store.gguf(model), override)


def test_the_models_go_template_comes_first(fake_runtime: Runtime, add_model: AddModel) -> None:
    add_model("both", template="[{{ range .Messages }}{{ .Content }}{{ end }}]", chat_template="{{ 'jinja' }}")
    assert _template(fake_runtime, "both").chat(HELLO, None) == "[Hello]"


def test_without_a_template_layer_the_ggufs_jinja_template_renders(fake_runtime: Runtime, add_model: AddModel) -> None:
    add_model("jinja", chat_template="{% for m in messages %}<{{ m.content }}>{% endfor %}")
    template = _template(fake_runtime, "jinja")
    assert template.jinja is not None and template.chat(HELLO, None) == "<Hello>"


def test_without_any_template_the_default_renders_the_prompt(fake_runtime: Runtime, add_model: AddModel) -> None:
    add_model("bare")
    assert _template(fake_runtime, "bare").generate("Hi", system=None, suffix=None, messages=[]) == "Hi"


def test_a_requests_template_replaces_the_models(fake_runtime: Runtime) -> None:
    template = _template(fake_runtime, "tiny", override="{{ .Prompt }}!")
    assert template.override and template.generate("Hi", system=None, suffix=None, messages=[]) == "Hi!"


def test_a_requests_template_that_does_not_parse_is_a_400(fake_runtime: Runtime) -> None:
    with pytest.raises(InvalidRequest, match="invalid template"):
        _template(fake_runtime, "tiny", override="{{ if }}")


def test_a_models_template_that_fails_says_to_fix_the_model(fake_runtime: Runtime, add_model: AddModel) -> None:
    add_model("broken", template='{{ template "nope" . }}')
    with pytest.raises(InvalidRequest, match="fix its TEMPLATE and create the model again"):
        _template(fake_runtime, "broken").chat(HELLO, None)


def test_a_template_that_renders_tools_gives_the_tools_capability(fake_runtime: Runtime, add_model: AddModel) -> None:
    model = fake_runtime.store.get(add_model("tools", template=TOOLS))
    assert capabilities(model, fake_runtime.store.gguf(model)) == ["completion", "tools"]


def test_a_suffix_template_gives_the_insert_capability(fake_runtime: Runtime, add_model: AddModel) -> None:
    model = fake_runtime.store.get(add_model("fim", template="{{ .Prompt }}<fim>{{ .Suffix }}"))
    assert capabilities(model, fake_runtime.store.gguf(model)) == ["completion", "insert"]


def test_an_embedding_model_can_only_embed(fake_runtime: Runtime, add_model: AddModel) -> None:
    model = fake_runtime.store.get(add_model("emb", pooling=True, template=TOOLS))
    assert capabilities(model, fake_runtime.store.gguf(model)) == ["embedding"]


def test_a_broken_template_still_lists_completion(fake_runtime: Runtime, add_model: AddModel) -> None:
    model = fake_runtime.store.get(add_model("broken", template="{{ if }}"))
    assert capabilities(model, fake_runtime.store.gguf(model)) == ["completion"]
