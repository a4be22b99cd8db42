"""service.common: resolving a request's model, keep_alive, merged options and the load spec."""

from __future__ import annotations

import pytest

from nbllm.config import Settings
from nbllm.errors import InvalidModelName, InvalidRequest, ModelNotFound
from nbllm.options import Options
from nbllm.runtime import Runtime
from nbllm.service.common import DEFAULT_NUM_CTX, details_of, keep_alive_of, load_spec, model_options, resolve_model
from tests.service.conftest import AddModel


def test_a_request_without_a_model_is_a_400(fake_runtime: Runtime) -> None:
    with pytest.raises(InvalidRequest, match="model is required"):
        resolve_model(fake_runtime, "")


def test_a_malformed_name_is_an_invalid_model_name(fake_runtime: Runtime) -> None:
    with pytest.raises(InvalidModelName, match=r"invalid model name '\.\./x'"):
        resolve_model(fake_runtime, "../x")


def test_an_unknown_model_is_not_found(fake_runtime: Runtime) -> None:
    with pytest.raises(ModelNotFound):
        resolve_model(fake_runtime, "nosuch")


def test_a_model_whose_weights_are_gone_says_to_pull_it_again(fake_runtime: Runtime) -> None:
    model = fake_runtime.store.get("tiny")
    assert model.model_path is not None
    model.model_path.unlink()
    with pytest.raises(InvalidRequest, match="has no weights in the store"):
        resolve_model(fake_runtime, "tiny")


def test_keep_alive_durations_are_seconds() -> None:
    assert (keep_alive_of("5m"), keep_alive_of(30), keep_alive_of(None)) == (300.0, 30.0, None)


def test_a_bad_keep_alive_is_a_400() -> None:
    with pytest.raises(InvalidRequest, match="invalid keep_alive"):
        keep_alive_of("soon")


def test_request_options_override_the_models_params(fake_runtime: Runtime, add_model: AddModel) -> None:
    model = fake_runtime.store.get(add_model("p", params={"temperature": 0.1, "top_k": 7}))
    options = model_options(model, {"temperature": 0.5})
    assert (options.temperature, options.top_k) == (0.5, 7)


def test_modelfile_style_text_params_are_converted(fake_runtime: Runtime, add_model: AddModel) -> None:
    model = fake_runtime.store.get(add_model("p", params={"num_ctx": "1024", "stop": ["a", "b"]}))
    options = model_options(model, None)
    assert (options.num_ctx, tuple(options.stop)) == (1024, ("a", "b"))


def test_num_ctx_is_clamped_to_the_trained_context(fake_runtime: Runtime) -> None:
    model = fake_runtime.store.get("tiny")
    info = fake_runtime.store.gguf(model)
    assert info.context_length == 2048 < DEFAULT_NUM_CTX
    assert load_spec(fake_runtime, model, info, Options()).num_ctx == 2048
    assert load_spec(fake_runtime, model, info, Options(num_ctx=10**6)).num_ctx == 2048
    assert load_spec(fake_runtime, model, info, Options(num_ctx=512)).num_ctx == 512


def test_the_batch_never_exceeds_the_context(fake_runtime: Runtime) -> None:
    model = fake_runtime.store.get("tiny")
    spec = load_spec(fake_runtime, model, fake_runtime.store.gguf(model), Options(num_ctx=64, num_batch=10**6))
    assert spec.num_batch == 64


def test_an_embedding_model_gets_one_slot(fake_runtime: Runtime, add_model: AddModel) -> None:
    model = fake_runtime.store.get(add_model("emb", pooling=True))
    spec = load_spec(fake_runtime, model, fake_runtime.store.gguf(model), Options())
    assert spec.embedding and spec.parallel == 1


def test_the_cpu_library_offloads_nothing(settings: Settings, fake_runtime: Runtime) -> None:
    rt = Runtime.from_settings(settings.model_copy(update={"llm_library": "cpu", "num_parallel": 3}))
    model = fake_runtime.store.get("tiny")
    spec = load_spec(rt, model, fake_runtime.store.gguf(model), Options(num_gpu=99))
    assert (spec.num_gpu, spec.parallel) == (0, 3)
    rt.close()


def test_details_come_from_the_config_blob(fake_runtime: Runtime) -> None:
    details = details_of(fake_runtime.store.get("tiny"))
    assert (details.format, details.family, details.families) == ("gguf", "llama", ["llama"])
