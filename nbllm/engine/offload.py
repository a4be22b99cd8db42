"""How many layers of a model go to which GPU: Ollama's estimate, as a pure function of data.

Devices (name, kind, free and total memory, as llama.cpp's device API reports them) and a model's facts
(bytes of each repeating layer, of the output layer, of the KV cache per token) go in; a plan comes out:
the layers on each GPU, the bytes each GPU will hold, the KV cache's bytes. No I/O and no llama.cpp here,
so the rules are unit-tested with device descriptions as data.

The rules follow Ollama's ``llm/memory.go`` and ``server/sched.go``:

- each GPU keeps ``OLLAMA_GPU_OVERHEAD`` and a backend minimum free; the compute graph is reserved on
  every GPU used; a GPU that cannot hold the graph and two layers is not used;
- layers go to the GPUs round-robin, each one while it fits, then the output layer if it fits too
  (llama.cpp counts ``n_layer + 1`` offloadable layers: the output layer is the last);
- ``num_gpu`` caps the layers (0 = CPU only; -1 = as many as fit);
- one GPU that holds the whole model is preferred over several (the roomiest first), unless
  ``OLLAMA_SCHED_SPREAD``; otherwise all usable GPUs share it;
- a quantized KV cache (``q8_0``, ``q4_0``) needs flash attention switched on explicitly
  (``OLLAMA_FLASH_ATTENTION=1``); without it the cache stays ``f16`` and a warning says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CUDA_MINIMUM",
    "Device",
    "ModelFacts",
    "OffloadPlan",
    "OffloadRequest",
    "attention_settings",
    "cpu_build_warning",
    "facts_from_gguf",
    "plan_offload",
]

CUDA_MINIMUM = 457 << 20
"""Memory a CUDA (or ROCm) device keeps free for its own use (Ollama's ``MinimumMemory``)."""
_METAL_MINIMUM = 512 << 20
_KV_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32}
_QUANTIZED_KV = frozenset({"q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"})


@dataclass(frozen=True)
class Device:
    """One device llama.cpp can compute on."""

    index: int
    """Position in llama.cpp's device list (what ``main_gpu`` and ``tensor_split`` count)."""
    name: str
    """llama.cpp's name: ``CUDA0``, ``Metal``, ``Vulkan0``, ``CPU``."""
    description: str
    """The hardware: ``NVIDIA H200``, ``Apple M2``, the CPU's model name."""
    kind: str
    """``gpu``, ``igpu`` (shares host memory), ``accel`` or ``cpu``."""
    total: int
    free: int

    @property
    def is_gpu(self) -> bool:
        """Whether layers can be offloaded to it."""
        return self.kind in ("gpu", "igpu")

    @property
    def minimum(self) -> int:
        """Bytes the backend needs left free."""
        return _METAL_MINIMUM if self.name.lower().startswith("metal") else CUDA_MINIMUM

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (for ``/api/ps`` and logs)."""
        return {
            "name": self.name,
            "description": self.description,
            "type": self.kind,
            "total": self.total,
            "free": self.free,
        }


@dataclass(frozen=True)
class ModelFacts:
    """What the estimate needs to know about a model, read from its GGUF."""

    layer_bytes: tuple[int, ...]
    """Weights of each repeating block (``blk.N``)."""
    output_bytes: int
    """Weights of the output layer (``output`` or the tied ``token_embd``, plus ``output_norm``)."""
    kv_bytes_per_token: int
    """K and V of one position in every layer, in f16."""
    head_count: int = 1
    head_count_kv: int = 1

    @property
    def n_layer(self) -> int:
        """Repeating blocks."""
        return len(self.layer_bytes)


@dataclass(frozen=True)
class OffloadRequest:
    """The load-time settings the plan depends on."""

    num_ctx: int
    parallel: int = 1
    num_batch: int = 512
    num_gpu: int = -1
    """Layers to offload: -1 = as many as fit, 0 = none."""
    kv_cache_type: str = "f16"
    flash_attention: bool | None = None
    overhead: int = 0
    """``OLLAMA_GPU_OVERHEAD``: bytes kept free on each GPU."""
    spread: bool = False
    """``OLLAMA_SCHED_SPREAD``: always use every GPU."""


@dataclass(frozen=True)
class OffloadPlan:
    """Where a model's layers go."""

    gpu_layers: int
    """Layers offloaded in all (llama.cpp's ``n_gpu_layers``; ``n_layer + 1`` is everything)."""
    total_layers: int
    """``n_layer + 1``."""
    layers: dict[int, int] = field(default_factory=dict)
    """Layers on each device, by device index."""
    vram: dict[int, int] = field(default_factory=dict)
    """Bytes each device will hold (its layers, its share of the KV cache and the graph)."""
    total_bytes: int = 0
    """Weights + KV cache + graph, wherever they are."""
    kv_bytes: int = 0
    graph_bytes: int = 0
    kv_cache_type: str = "f16"
    flash_attention: bool | None = None
    warnings: tuple[str, ...] = ()
    wanted_layers: int = 0
    """Layers asked for (all of them with num_gpu -1); fewer placed = the model did not fit."""
    names: dict[int, str] = field(default_factory=dict)
    """Names of the devices used, by index."""
    ordinals: dict[int, int] = field(default_factory=dict)
    """Each usable GPU's position in llama.cpp's list of a model's devices (what ``main_gpu`` and
    ``tensor_split`` count: the discrete GPUs in order, or the integrated ones if there is none)."""

    @property
    def vram_bytes(self) -> int:
        """Bytes in GPU memory (``size_vram``)."""
        return sum(self.vram.values())

    @property
    def fits(self) -> bool:
        """Whether every layer asked for found room on a GPU."""
        return self.gpu_layers >= self.wanted_layers

    def tensor_split(self, n_devices: int) -> list[float]:
        """llama.cpp's ``tensor_split``: each GPU's share of the offloaded layers, by ordinal."""
        shares = [0.0] * n_devices
        for index, n in self.layers.items():
            if self.ordinals.get(index, n_devices) < n_devices:
                shares[self.ordinals[index]] = float(n)
        return shares

    @property
    def all_on_gpu(self) -> bool:
        """Whether every layer is offloaded: then llama.cpp computes on the GPUs, not on the host's CPUs."""
        return self.gpu_layers >= self.total_layers > 0

    def device_names(self) -> tuple[str, ...]:
        """The devices the model runs on: the GPUs used, then ``CPU`` if any layer stays in host memory."""
        gpus = tuple(self.names.get(i, f"GPU{i}") for i, n in sorted(self.layers.items()) if n > 0)
        return gpus + (("CPU",) if not self.all_on_gpu else ())

    @property
    def main_device(self) -> int | None:
        """The ordinal of the one GPU that holds everything offloaded, if only one does (``main_gpu``)."""
        used = [i for i, n in self.layers.items() if n > 0]
        return self.ordinals.get(used[0]) if len(used) == 1 else None


def attention_settings(
    kv_cache_type: str,
    flash_attention: bool | None = None,  # noqa: FBT001 - tri-state, as the setting
) -> tuple[str, bool | None, tuple[str, ...]]:
    """(KV cache type, flash attention, warnings) as Ollama resolves them.

    A quantized cache needs flash attention switched on explicitly; otherwise the cache stays f16.

    >>> attention_settings("q8_0", True)
    ('q8_0', True, ())
    >>> attention_settings("q8_0", None)[:2]
    ('f16', None)
    """
    kv = (kv_cache_type or "f16").lower()
    if kv in _QUANTIZED_KV and flash_attention is not True:
        return (
            "f16",
            flash_attention,
            (f"OLLAMA_FLASH_ATTENTION must be enabled to use a quantized OLLAMA_KV_CACHE_TYPE ({kv}); using f16",),
        )
    return kv, flash_attention, ()


def _graph_bytes(facts: ModelFacts, req: OffloadRequest, kv: int) -> int:
    """Compute buffer estimate: Ollama's fallback, GQA x KV / 6, at least a batch of activations."""
    gqa = max(1, facts.head_count // max(1, facts.head_count_kv))
    per_layer = facts.layer_bytes[0] if facts.layer_bytes else 0
    return max(gqa * kv // 6, min(req.num_batch, req.num_ctx) * 4 * 1024, per_layer // 4)


def _place(
    gpus: Sequence[Device], facts: ModelFacts, req: OffloadRequest, kv: int, graph: int
) -> tuple[dict[int, int], dict[int, int]]:
    """Ollama's round-robin placement of the blocks and then the output layer over ``gpus``."""
    kv_layer = kv // max(1, facts.n_layer)
    first = (facts.layer_bytes[0] if facts.layer_bytes else 0) + kv_layer
    room = [g for g in gpus if g.free >= req.overhead + graph + g.minimum + 2 * first]
    used = {g.index: g.minimum + req.overhead + first for g in room}
    counts = {g.index: 0 for g in room}
    held = {g.index: 0 for g in room}  # the model's own bytes on each GPU (no reserve, no overhead)
    placed = 0
    limit = facts.n_layer + 1 if req.num_gpu < 0 else req.num_gpu
    sizes = [b + kv_layer for b in facts.layer_bytes] + [facts.output_bytes]
    for i, size in enumerate(sizes):
        if placed >= limit:
            break
        while room:
            g = room[i % len(room)]
            if g.free > used[g.index] + graph + size:
                used[g.index] += size
                held[g.index] += size
                counts[g.index] += 1
                placed += 1
                break
            room.remove(g)  # full: the next layers go elsewhere
        if not room:
            break
    vram = {i: held[i] + graph for i, n in counts.items() if n > 0}
    return {i: n for i, n in counts.items() if n > 0}, vram


def plan_offload(devices: Sequence[Device], facts: ModelFacts, req: OffloadRequest) -> OffloadPlan:
    """Decide how many layers go to which GPU."""
    kv_type, fa, warnings = attention_settings(req.kv_cache_type, req.flash_attention)
    kv = math.ceil(facts.kv_bytes_per_token * req.num_ctx * req.parallel * _KV_BYTES.get(kv_type, 2.0) / 2.0)
    graph = _graph_bytes(facts, req, kv)
    weights = sum(facts.layer_bytes) + facts.output_bytes
    total_layers = facts.n_layer + 1
    wanted = 0 if req.num_gpu == 0 else (total_layers if req.num_gpu < 0 else min(req.num_gpu, total_layers))
    base = OffloadPlan(
        gpu_layers=0,
        total_layers=total_layers,
        total_bytes=weights + kv + graph,
        kv_bytes=kv,
        graph_bytes=graph,
        kv_cache_type=kv_type,
        flash_attention=fa,
        warnings=warnings,
        wanted_layers=wanted,
    )
    usable = [d for d in devices if d.kind == "gpu"] or [d for d in devices if d.kind == "igpu"]  # as llama.cpp
    gpus = sorted(usable, key=lambda d: d.free, reverse=True)
    if not gpus or wanted == 0:
        return base
    candidates: list[Sequence[Device]] = [] if req.spread else [[g] for g in gpus]
    candidates.append(gpus)
    best: tuple[dict[int, int], dict[int, int]] = ({}, {})
    for group in candidates:
        layers, vram = _place(group, facts, req, kv, graph)
        if sum(layers.values()) > sum(best[0].values()):
            best = layers, vram
        if sum(layers.values()) >= wanted:
            break
    layers, vram = best
    placed = sum(layers.values())
    if placed >= total_layers:  # all of it on GPUs: nothing of the model stays in host memory
        vram = _scale_to(vram, base.total_bytes)
    names = {g.index: g.name for g in gpus}
    ordinals = {d.index: i for i, d in enumerate(usable)}
    return OffloadPlan(
        **{**base.__dict__, "gpu_layers": placed, "layers": layers, "vram": vram, "names": names, "ordinals": ordinals}
    )


def _scale_to(vram: dict[int, int], total: int) -> dict[int, int]:
    """Share ``total`` among the devices in proportion to what each was given (full offload: size == size_vram)."""
    given = sum(vram.values()) or 1
    out = {i: total * v // given for i, v in vram.items()}
    first = next(iter(out))
    out[first] += total - sum(out.values())
    return out


def facts_from_gguf(metadata: dict[str, Any], tensors: Sequence[dict[str, Any]]) -> ModelFacts:
    """A model's facts from its GGUF metadata and tensor table (``name``, ``type`` name, ``shape``)."""
    import gguf  # block sizes of llama.cpp's tensor types

    sizes = {t.name: gguf.GGML_QUANT_SIZES[t] for t in gguf.GGMLQuantizationType if t in gguf.GGML_QUANT_SIZES}
    arch = str(metadata.get("general.architecture", ""))
    n_layer = int(metadata.get(f"{arch}.block_count", 0) or 0)
    blocks = [0] * n_layer
    output = tied = 0
    for t in tensors:
        block, type_size = sizes.get(str(t["type"]), (1, 4))
        count = math.prod(int(d) for d in t["shape"])
        nbytes = count * type_size // block
        name = str(t["name"])
        if name.startswith("blk."):
            index = int(name.split(".")[1])
            if index < n_layer:
                blocks[index] += nbytes
        elif name.startswith(("output.", "output_norm.")):
            output += nbytes
        elif name.startswith("token_embd."):
            tied = nbytes
    if not any(t["name"].startswith("output.") for t in tensors):
        output += tied  # tied embeddings: the output layer reads token_embd
    return ModelFacts(
        layer_bytes=tuple(blocks),
        output_bytes=output,
        kv_bytes_per_token=_kv_per_token(metadata, arch, n_layer),
        head_count=_scalar(metadata.get(f"{arch}.attention.head_count", 1)),
        head_count_kv=_scalar(
            metadata.get(f"{arch}.attention.head_count_kv", metadata.get(f"{arch}.attention.head_count", 1))
        ),
    )


def _scalar(value: Any) -> int:
    """A per-layer list (some architectures) counts as its largest entry."""
    if isinstance(value, list):
        return int(max(value)) if value else 1
    return int(value or 1)


def _kv_per_token(metadata: dict[str, Any], arch: str, n_layer: int) -> int:
    heads = _scalar(metadata.get(f"{arch}.attention.head_count", 1))
    heads_kv = _scalar(metadata.get(f"{arch}.attention.head_count_kv", heads))
    width = int(metadata.get(f"{arch}.embedding_length", 0) or 0)
    head_dim = width // max(1, heads)
    k = int(metadata.get(f"{arch}.attention.key_length", head_dim) or head_dim)
    v = int(metadata.get(f"{arch}.attention.value_length", head_dim) or head_dim)
    return 2 * n_layer * heads_kv * (k + v)


def cpu_build_warning(devices: Sequence[Device], hardware: str | None) -> str | None:
    """The one warning for a machine with a GPU whose llama.cpp was built without GPU support."""
    if not hardware or any(d.is_gpu for d in devices):
        return None
    return (
        f"this machine has a GPU ({hardware}) but llama.cpp was built for the CPU only, so models run on "
        "the CPU. Reinstall llama-cpp-python with GPU support, e.g. "
        'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir --no-binary llama-cpp-python '
        "llama-cpp-python==0.3.36 (Apple: -DGGML_METAL=on; others: -DGGML_VULKAN=on); see docs/gpu.md"
    )
