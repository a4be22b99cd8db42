"""The composition root: settings, model store, engine factory and scheduler, built once."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from nbllm.config import Settings
from nbllm.engine import Engine, EngineFactory, LoadSpec
from nbllm.engine.offload import Device
from nbllm.placement import DeviceLister, Placer
from nbllm.scheduler import Scheduler
from nbllm.store import ModelStore
from nbllm.store.pypi import IndexConfig, pip_index_config

__all__ = ["GenerationRecord", "Observer", "Runtime"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationRecord:
    """One finished generation, as monitoring sees it (reported once per request, never per token)."""

    model: str
    prompt_tokens: int
    """Prompt tokens evaluated (a reused cached prefix not counted)."""
    cached_tokens: int
    generated_tokens: int
    time_to_first_token: float
    """Seconds from the request's arrival to its first generated token (queueing and loading included)."""
    decode_seconds: float
    done_reason: str
    draft_tokens: int = 0
    """Draft tokens proposed by speculative decoding, and of them those accepted."""
    draft_accepted_tokens: int = 0


class Observer(Protocol):
    """Something that watches what the runtime does (the server's /metrics)."""

    def generation_finished(self, record: GenerationRecord) -> None:
        """Called once when a generation ends normally."""


def _llama_factory(spec: LoadSpec) -> Engine:
    from nbllm.engine.llama import load_llama  # imported on first load: `import nbllm` stays light

    return load_llama(spec)


def _llama_devices() -> list[Device]:
    from nbllm.engine.llama.devices import list_devices  # imported on first use, as the engine

    return list_devices()


def _no_devices() -> list[Device]:
    return []


@dataclass
class Runtime:
    """Everything a server, CLI command or notebook magic needs, wired together."""

    settings: Settings
    store: ModelStore
    scheduler: Scheduler
    engine_factory: EngineFactory
    _index: IndexConfig | None = field(default=None, repr=False)
    observers: list[Observer] = field(default_factory=list, repr=False)
    """Watchers of finished generations; an edge adds itself while it serves."""
    devices: DeviceLister = field(default=_no_devices, repr=False)
    """The devices the engine can use, with their free memory now (llama.cpp's list for the real engine)."""

    @classmethod
    def from_settings(
        cls, settings: Settings, *, engine_factory: EngineFactory | None = None, devices: DeviceLister | None = None
    ) -> Runtime:
        """Build the store, engine factory and scheduler from one Settings object.

        ``devices`` defaults to llama.cpp's device list for the real engine and to none for another factory
        (tests pass device descriptions as data to simulate GPUs)."""
        factory = engine_factory or _llama_factory
        if devices is None:
            devices = _llama_devices if engine_factory is None else _no_devices
        if (settings.llm_library or "").lower() == "cpu":
            devices = _no_devices
        store = ModelStore(settings.models_dir, tmp_dir=settings.tmpdir)
        scheduler = Scheduler(
            factory,
            default_keep_alive=settings.keep_alive,
            max_loaded=settings.max_loaded_models or 3,  # Ollama: 3 per GPU, 3 on CPU
            max_queue=settings.max_queue,
            place=Placer(settings, devices),
        )
        return cls(settings=settings, store=store, scheduler=scheduler, engine_factory=factory, devices=devices)

    def index_config(self) -> IndexConfig:
        """Package indexes for built-in models: NBLLM_PACKAGE_INDEX, else pip's configuration."""
        if self._index is None:
            if self.settings.package_index:
                self._index = IndexConfig(index_urls=self.settings.package_index)
            else:
                self._index = pip_index_config()
        return self._index

    def startup(self) -> None:
        """What a server does when it starts: fix legacy blob names, prune unreferenced blobs and abandoned
        partial downloads unless OLLAMA_NOPRUNE."""
        from nbllm.store.leftovers import prune_partials
        from nbllm.store.legacy import fix_blob_names

        fix_blob_names(self.store.blobs.root)
        if self.devices is _llama_devices:
            from nbllm.engine.llama.devices import log_hardware

            log_hardware()
        if not self.settings.noprune:
            removed = self.store.prune()
            if removed:
                log.info("removed %d unused blob(s)", len(removed))
            prune_partials(self.store)

    def observe(self, record: GenerationRecord) -> None:
        """Tell every observer of a finished generation; an observer's failure never fails the request."""
        for observer in list(self.observers):
            try:
                observer.generation_finished(record)
            except Exception:  # monitoring must not break serving
                log.exception("observer %r failed", observer)

    def close(self) -> None:
        """Unload every model."""
        self.scheduler.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @functools.cached_property
    def version(self) -> str:
        """nbllm's version."""
        from nbllm._version import __version__

        return __version__
