"""Placing a model on the machine's devices when the scheduler loads it (Ollama's GPU-aware scheduling).

The scheduler calls a ``Placer`` with the load spec of each model it is about to load: the devices'
free memory is read now (so models already loaded count), the model's layer sizes come from its GGUF
(read once per file), and ``engine.offload.plan_offload`` decides. The spec comes back with the plan and
with the host memory it still needs; a plan that does not fit makes the scheduler evict first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from nbllm.config import Settings
from nbllm.engine import LoadSpec
from nbllm.engine.offload import Device, ModelFacts, OffloadRequest, facts_from_gguf, plan_offload
from nbllm.errors import NbllmError
from nbllm.store.gguf import read_gguf

__all__ = ["DeviceLister", "Placer", "read_facts"]

log = logging.getLogger(__name__)

DeviceLister = Callable[[], Sequence[Device]]
"""Returns the devices with their memory free now."""


def read_facts(path: Path) -> ModelFacts:
    """A model's layer sizes and KV cache width from its GGUF header."""
    info = read_gguf(path, keep_arrays=4096, tensors=True)
    return facts_from_gguf(info.metadata, info.tensors)


class Placer:
    """Turns a load spec into one with an offload plan, from the devices' state at load time."""

    def __init__(
        self,
        settings: Settings,
        devices: DeviceLister,
        facts: Callable[[Path], ModelFacts] = read_facts,
    ) -> None:
        self._overhead = settings.gpu_overhead
        self._spread = settings.sched_spread
        self._devices = devices
        self._facts = facts
        self._known: dict[Path, ModelFacts] = {}
        self._lock = threading.Lock()

    def _facts_of(self, path: Path) -> ModelFacts:
        with self._lock:
            known = self._known.get(path)
        if known is None:
            known = self._facts(path)
            with self._lock:
                self._known[path] = known
        return known

    def __call__(self, spec: LoadSpec) -> LoadSpec:
        """The spec with its plan (unchanged when no GPU can take any of it)."""
        devices = list(self._devices())
        if spec.num_gpu == 0 or not any(d.is_gpu for d in devices):
            return spec
        try:
            facts = self._facts_of(spec.path)
        except (NbllmError, OSError, ValueError, KeyError) as exc:  # llama.cpp reports a bad file better
            log.warning("cannot size %s for offload (%s); leaving it to llama.cpp", spec.path.name, exc)
            return spec
        request = OffloadRequest(
            num_ctx=spec.num_ctx,
            parallel=spec.parallel,
            num_batch=spec.num_batch,
            num_gpu=spec.num_gpu,
            kv_cache_type=spec.kv_cache_type,
            flash_attention=spec.flash_attention,
            overhead=self._overhead,
            spread=self._spread,
        )
        plan = plan_offload(devices, facts, request)
        for warning in plan.warnings:
            log.warning("%s", warning)
        log.info(
            "offload to %s: %d/%d layers, %d MiB of %d MiB in GPU memory (kv %d MiB)",
            ", ".join(plan.device_names()),
            plan.gpu_layers,
            plan.total_layers,
            plan.vram_bytes >> 20,
            plan.total_bytes >> 20,
            plan.kv_bytes >> 20,
        )
        host = max(0, plan.total_bytes - plan.vram_bytes)
        return replace(spec, offload=plan, memory_estimate=host if plan.gpu_layers else spec.memory_estimate)
