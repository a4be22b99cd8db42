"""Options: Ollama's defaults, JSON type errors, Modelfile parameters, load-time keys."""

from __future__ import annotations

import logging

import pytest

from nbllm.errors import InvalidOption
from nbllm.options import LOAD_TIME_OPTIONS, Options, parse_api_options, parse_parameter


def test_defaults() -> None:
    o = Options()
    assert (o.temperature, o.top_k, o.top_p, o.repeat_penalty, o.num_predict, o.seed) == (0.8, 40, 0.9, 1.0, -1, -1)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"num_ctx": "4096"}, 'option "num_ctx" must be of type integer'),
        ({"temperature": "hot"}, 'option "temperature" must be of type float32'),
        ({"use_mmap": 1}, 'option "use_mmap" must be of type boolean'),
        ({"stop": [1, 2]}, 'option "stop" must be of type array of strings'),
        ({"num_predict": True}, 'option "num_predict" must be of type integer'),
    ],
)
def test_wrong_json_types(raw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        parse_api_options(raw)


def test_unknown_and_deprecated_keys_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert parse_api_options({"wat": 1, "mirostat": 2, "top_k": 3}) == {"top_k": 3}
    assert "wat" in caplog.text and "mirostat" in caplog.text


def test_merge_order_and_load_key() -> None:
    base = Options().merged({"temperature": 0.2, "num_ctx": 1024}, {"temperature": 0.0})
    assert base.temperature == 0.0 and base.num_ctx == 1024
    assert base.load_key() != Options().load_key()
    assert Options().merged({"temperature": 0.1}).load_key() == Options().load_key()
    assert "num_ctx" in LOAD_TIME_OPTIONS and "temperature" not in LOAD_TIME_OPTIONS


def test_modelfile_parameters() -> None:
    assert parse_parameter("num_ctx", ["8192"]) == 8192
    assert parse_parameter("use_mmap", ["false"]) is False
    with pytest.raises(InvalidOption, match="unknown parameter 'nope'"):
        parse_parameter("nope", ["1"])
    with pytest.raises(InvalidOption):
        parse_parameter("num_ctx", ["big"])
