"""Pieces every use case needs: resolving names, merging options, sizing a model load."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from nbllm.duration import parse_keep_alive
from nbllm.engine import LoadSpec
from nbllm.errors import InvalidRequest, ModelNotFound
from nbllm.options import Options, parse_api_options, parse_parameter
from nbllm.runtime import Runtime
from nbllm.schema import ModelDetails
from nbllm.store import LocalModel, ModelName, ModelStore
from nbllm.store.gguf import GGUFInfo, kv_cache_bytes, read_gguf
from nbllm.store.snapshots import SnapshotStore
from nbllm.system import available_memory

__all__ = [
    "AUTO_PARALLEL",
    "DEFAULT_NUM_CTX",
    "details_of",
    "keep_alive_of",
    "load_spec",
    "model_options",
    "parse_model_name",
    "resolve_model",
]

DEFAULT_NUM_CTX = 4096
"""Ollama's default context length without a large GPU."""
_KV_VALUE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32}
AUTO_PARALLEL = 4
"""Slots per model when OLLAMA_NUM_PARALLEL is unset and memory allows (else 1)."""


def parse_model_name(name: str | None) -> ModelName:
    """The one parser of a name a request gives: ``model is required`` when empty, else
    :meth:`ModelName.parse` (whose ``InvalidModelName`` says what is wrong with it); both are 400s."""
    if not name:
        raise InvalidRequest("model is required")
    return ModelName.parse(name)


def resolve_model(rt: Runtime, name: str) -> LocalModel:
    """The stored model a request names: 400 for a missing or bad name, 404 for an unknown one."""
    model = _find(rt.store, parse_model_name(name))
    if model is None:
        raise ModelNotFound(name)
    if model.problems:  # listed, shown and removable, but not run on half of its settings
        raise InvalidRequest(
            f"model '{name}' is damaged: {'; '.join(model.problems)}; "
            f"remove it (nbllm rm {name}) and pull or create it again"
        )
    if model.model_path is None or not model.model_path.is_file():
        raise InvalidRequest(f"model '{name}' has no weights in the store; pull or create it again")
    return model


class _NotKept(Exception):
    """A model ``_model_of`` does not memoize: its manifest changed meanwhile, or it is damaged."""


def _find(store: ModelStore, name: ModelName) -> LocalModel | None:
    """``store.find(name)``, memoized on the manifest's bytes: every request resolves its model, and parsing
    the manifest and its small layers again was ~0.3 ms of its time to first token. The manifest is read
    (not parsed) each time, so a model replaced (create, pull, cp: new bytes), removed (no file) or changed by
    another process is never served from the memo."""
    path = store.manifests.find(name)
    if path is None:
        return None
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return _model_of(store, path, digest, name)
    except (OSError, _NotKept):  # removed or rewritten meanwhile, or damaged: the store says what it is now
        return store.find(name)


@functools.lru_cache(maxsize=32)
def _model_of(store: ModelStore, path: Path, digest: str, name: ModelName) -> LocalModel:
    """The model of the manifest at ``path`` whose bytes have ``digest`` (those bytes, and the content-addressed
    blobs they name, determine it); a damaged one is not kept, so that a repaired blob is seen."""
    model = store.find(name)
    if model is None or model.digest != digest or model.problems:
        raise _NotKept
    return model


def keep_alive_of(value: str | float | None) -> float | None:
    """A request's keep_alive in seconds (None if absent); bad values are a 400."""
    try:
        return parse_keep_alive(value)
    except ValueError as exc:
        raise InvalidRequest(f"invalid keep_alive: {exc}") from None


def model_options(model: LocalModel, request_options: dict[str, Any] | None) -> Options:
    """Ollama's defaults, then the model's params layer, then the request's options."""
    layer: dict[str, Any] = {}
    for key, value in model.params.items():
        try:
            converted = parse_api_options({key: value})
        except InvalidRequest:
            converted = {
                key: parse_parameter(key, [str(v) for v in value] if isinstance(value, list) else [str(value)])
            }
        layer.update(converted)
    return Options().merged(layer, parse_api_options(request_options))


def load_spec(rt: Runtime, model: LocalModel, info: GGUFInfo, options: Options) -> LoadSpec:
    """How to load a model for a request: context clamped to the trained one, slots, offload."""
    settings = rt.settings
    num_ctx = options.num_ctx or settings.context_length or DEFAULT_NUM_CTX
    if info.context_length:
        num_ctx = min(num_ctx, info.context_length)
    num_ctx = max(num_ctx, 4)
    parallel = settings.num_parallel or _auto_parallel(model, info, num_ctx)
    if info.is_embedding_model:
        parallel = 1
    cpu_only = (settings.llm_library or "").lower() == "cpu"
    assert model.model_path is not None
    return LoadSpec(
        path=model.model_path,
        num_ctx=num_ctx,
        parallel=parallel,
        # an absurd batch is never passed to llama.cpp (0 is an error there): <= 0 is the default, at most num_ctx
        num_batch=min(options.num_batch if options.num_batch > 0 else Options.num_batch, num_ctx),
        num_gpu=0 if cpu_only else options.num_gpu,
        main_gpu=options.main_gpu,
        num_thread=options.num_thread,
        use_mmap=options.use_mmap,
        flash_attention=settings.flash_attention,
        kv_cache_type=settings.kv_cache_type,
        adapters=model.adapters,
        draft=model.draft,
        embedding=info.is_embedding_model,
        memory_estimate=model.size + _kv_estimate(model, info, num_ctx * parallel, settings.kv_cache_type),
        load_timeout=settings.load_timeout if settings.load_timeout > 0 else float("inf"),
        ram_cache=settings.kv_cache_ram,
        snapshots=SnapshotStore(rt.store.root / "kvstate", settings.kv_snapshots_max)
        if settings.kv_snapshots
        else None,
    )


def _kv_estimate(model: LocalModel, info: GGUFInfo, n_tokens: int, kv_type: str) -> int:
    """The KV caches a load allocates: the model's, and its draft model's (one sequence per slot, as many
    positions); ``model.size`` already counts the draft's weights, being the manifest's layers."""
    per_value = _KV_VALUE_BYTES.get(kv_type, 2.0)
    total = kv_cache_bytes(info, n_tokens, per_value)
    if model.draft is not None:
        total += kv_cache_bytes(_draft_info(model.draft), n_tokens, per_value)
    return total


@functools.lru_cache(maxsize=16)  # (a blob's path names its content: the header read once per draft)
def _draft_info(path: Path) -> GGUFInfo:
    return read_gguf(path)


def _auto_parallel(model: LocalModel, info: GGUFInfo, num_ctx: int) -> int:
    """4 slots if weights plus a 4-slot KV cache take under half of the free memory, else 1."""
    need = model.size + kv_cache_bytes(info, num_ctx * AUTO_PARALLEL)
    return AUTO_PARALLEL if need < available_memory() // 2 else 1


def details_of(model: LocalModel) -> ModelDetails:
    """The ``details`` block, from the config blob written at pull/create time."""
    config = model.config
    families = config.get("model_families")
    return ModelDetails(
        parent_model=str(config.get("parent_model", "")),
        format=str(config.get("model_format") or "gguf"),
        family=str(config.get("model_family") or ""),
        families=[str(f) for f in families] if isinstance(families, list) else None,
        parameter_size=str(config.get("model_type") or ""),
        quantization_level=str(config.get("file_type") or ""),
    )
