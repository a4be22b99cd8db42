"""service.models: list, show, ps, pull's checks, copy and delete, over a store with fake engines."""

from __future__ import annotations

import pytest

from nbllm.errors import InvalidModelName, InvalidRequest, ModelNotFound
from nbllm.runtime import Runtime
from nbllm.schema import CopyRequest, DeleteRequest, EmbedRequest, PullRequest, ShowRequest
from nbllm.service import copy_model, delete_model, embed, list_models, ps, pull, show
from tests.service.conftest import AddModel


def test_list_names_every_stored_model(fake_runtime: Runtime, add_model: AddModel) -> None:
    add_model("other:7b")
    listed = {m.name: m for m in list_models(fake_runtime).models}
    assert set(listed) == {"tiny:latest", "other:7b"}
    assert listed["tiny:latest"].details.family == "llama" and listed["tiny:latest"].size > 0


def test_show_without_a_model_is_a_400(fake_runtime: Runtime) -> None:
    with pytest.raises(InvalidRequest, match="model is required"):
        show(fake_runtime, ShowRequest(model=""))


def test_show_of_an_unknown_model_is_not_found(fake_runtime: Runtime) -> None:
    with pytest.raises(ModelNotFound):
        show(fake_runtime, ShowRequest(model="nosuch"))


def test_show_of_a_malformed_name_is_an_invalid_model_name(fake_runtime: Runtime) -> None:
    with pytest.raises(InvalidModelName):
        show(fake_runtime, ShowRequest(model="a/b/c/d/e"))


def test_show_gives_the_template_params_and_gguf_metadata(fake_runtime: Runtime) -> None:
    shown = show(fake_runtime, ShowRequest(model="tiny"))
    assert shown.template is not None and shown.template.startswith("{{- range .Messages }}")
    assert shown.parameters is not None and '"<|im_end|>"' in shown.parameters
    assert shown.model_info is not None and shown.model_info["llama.context_length"] == 2048
    assert "tokenizer.chat_template" not in shown.model_info and shown.capabilities == ["completion"]


def test_show_applies_the_requests_options_and_system(fake_runtime: Runtime) -> None:
    shown = show(fake_runtime, ShowRequest(model="tiny", system="Be brief.", options={"temperature": 0.3}))
    assert shown.system == "Be brief." and 'SYSTEM """Be brief."""' in (shown.modelfile or "")
    assert "PARAMETER temperature 0.3" in (shown.modelfile or "")


def test_show_refuses_an_option_of_the_wrong_type(fake_runtime: Runtime) -> None:
    with pytest.raises(InvalidRequest):
        show(fake_runtime, ShowRequest(model="tiny", options={"temperature": "hot"}))


def test_show_falls_back_to_the_gguf_chat_template(fake_runtime: Runtime, add_model: AddModel) -> None:
    add_model("jinja", chat_template="{% for m in messages %}{{ m.content }}{% endfor %}")
    assert (
        show(fake_runtime, ShowRequest(model="jinja")).template == "{% for m in messages %}{{ m.content }}{% endfor %}"
    )


def test_ps_is_empty_until_a_model_is_loaded(fake_runtime: Runtime) -> None:
    assert ps(fake_runtime).models == []
    embed(fake_runtime, EmbedRequest(model="tiny", input="hello"))
    [loaded] = ps(fake_runtime).models
    assert loaded.name == "tiny:latest" and loaded.context_length == 2048 and loaded.processor == "100% CPU"


def test_pull_checks_the_name_before_any_network(fake_runtime: Runtime) -> None:
    with pytest.raises(InvalidRequest, match="model is required"):
        list(pull(fake_runtime, PullRequest(model="")))
    with pytest.raises(InvalidModelName, match="invalid model name"):
        list(pull(fake_runtime, PullRequest(model="a/b/c/d/e")))


def test_copy_gives_the_same_blobs_a_second_name(fake_runtime: Runtime) -> None:
    copy_model(fake_runtime, CopyRequest(source="tiny", destination="mine:v1"))
    store = fake_runtime.store
    assert store.get("mine:v1").model_digest == store.get("tiny").model_digest


def test_copy_of_an_unknown_model_is_not_found(fake_runtime: Runtime) -> None:
    with pytest.raises(ModelNotFound):
        copy_model(fake_runtime, CopyRequest(source="nosuch", destination="mine"))


def test_copy_to_a_malformed_name_is_refused(fake_runtime: Runtime) -> None:
    with pytest.raises(InvalidModelName, match=r'destination "\.\./x" is invalid'):
        copy_model(fake_runtime, CopyRequest(source="tiny", destination="../x"))


def test_delete_removes_the_model_and_its_unshared_blobs(fake_runtime: Runtime) -> None:
    store = fake_runtime.store
    weights = store.get("tiny").model_digest
    assert weights is not None
    delete_model(fake_runtime, DeleteRequest(model="tiny"))
    assert store.find("tiny") is None and not store.blobs.has(weights)


def test_delete_keeps_blobs_another_model_uses(fake_runtime: Runtime) -> None:
    copy_model(fake_runtime, CopyRequest(source="tiny", destination="twin"))
    weights = fake_runtime.store.get("tiny").model_digest
    assert weights is not None
    delete_model(fake_runtime, DeleteRequest(model="tiny"))
    assert fake_runtime.store.blobs.has(weights)


def test_delete_of_an_unknown_model_is_not_found(fake_runtime: Runtime) -> None:
    with pytest.raises(ModelNotFound):
        delete_model(fake_runtime, DeleteRequest(model="nosuch"))


def test_delete_removes_an_unreadable_manifest(fake_runtime: Runtime) -> None:
    path = fake_runtime.store.manifests.root / "registry.ollama.ai" / "library" / "junk" / "latest"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    delete_model(fake_runtime, DeleteRequest(model="junk"))
    assert not path.exists()
