"""service.registry: push checks the name before it opens a connection."""

from __future__ import annotations

import pytest

from nbllm.errors import InvalidModelName, InvalidRequest
from nbllm.runtime import Runtime
from nbllm.schema import PushRequest
from nbllm.service import push


def test_push_without_a_model_is_a_400(fake_runtime: Runtime) -> None:
    with pytest.raises(InvalidRequest, match="model is required"):
        list(push(fake_runtime, PushRequest(model="")))


def test_push_of_a_malformed_name_is_an_invalid_model_name(fake_runtime: Runtime) -> None:
    with pytest.raises(InvalidModelName, match="invalid model name"):
        list(push(fake_runtime, PushRequest(model="a/b/c/d/e")))
