"""service.layers: the checks on a create request's ``files`` before anything is built."""

from __future__ import annotations

import pytest

from nbllm.errors import InvalidRequest
from nbllm.runtime import Runtime
from nbllm.service.layers import check_files, file_kind
from nbllm.store import ModelStore


def _blob(store: ModelStore, data: bytes) -> str:
    return store.blobs.put_stream(iter([data]))


@pytest.fixture
def store(fake_runtime: Runtime) -> ModelStore:
    return fake_runtime.store


def test_present_blobs_under_clean_relative_paths_pass(store: ModelStore) -> None:
    check_files(store, {"model.gguf": _blob(store, b"GGUF...."), "sub/config.json": _blob(store, b"{}")})


@pytest.mark.parametrize("path", ["/etc/passwd", "../x.gguf", "a//b", "./a", "a\\b", "c:x"])
def test_a_path_that_is_not_clean_and_relative_is_refused(store: ModelStore, path: str) -> None:
    with pytest.raises(InvalidRequest, match="file path must be relative"):
        check_files(store, {path: _blob(store, b"x")})


def test_a_control_character_in_a_path_is_refused(store: ModelStore) -> None:
    with pytest.raises(InvalidRequest, match="control characters"):
        check_files(store, {"a\nb": _blob(store, b"x")})


def test_a_name_too_long_for_a_filesystem_is_refused(store: ModelStore) -> None:
    with pytest.raises(InvalidRequest, match="file path is too long"):
        check_files(store, {"x" * 256: _blob(store, b"x")})


def test_a_blob_not_uploaded_says_to_upload_it(store: ModelStore) -> None:
    missing = "sha256:" + "0" * 64
    with pytest.raises(InvalidRequest, match="upload it first"):
        check_files(store, {"model.gguf": missing})


def test_the_kind_of_weights_comes_from_the_gguf_magic(store: ModelStore) -> None:
    assert file_kind(store, {"weights.bin": _blob(store, b"GGUF....")}) == "gguf"
    assert file_kind(store, {"model.safetensors": _blob(store, b"\x08\x00")}) == "safetensors"


def test_a_gguf_name_without_the_magic_is_refused(store: ModelStore) -> None:
    with pytest.raises(InvalidRequest, match="is not a GGUF file"):
        file_kind(store, {"model.gguf": _blob(store, b"nope")})


def test_gguf_and_safetensors_together_are_refused(store: ModelStore) -> None:
    files = {"a.gguf": _blob(store, b"GGUF...."), "b.safetensors": _blob(store, b"\x08\x00")}
    with pytest.raises(InvalidRequest, match="mixed model file types"):
        file_kind(store, files)


def test_files_that_are_no_weights_are_refused(store: ModelStore) -> None:
    with pytest.raises(InvalidRequest, match="neither GGUF nor safetensors"):
        file_kind(store, {"README.md": _blob(store, b"# hi")})
