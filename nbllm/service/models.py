"""Use cases: list, show, ps, pull, copy, delete."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from nbllm.errors import InvalidModelName, InvalidRequest, ModelNotFound, NbllmError, StoreError
from nbllm.options import parse_api_options
from nbllm.runtime import Runtime
from nbllm.schema import (
    CopyRequest,
    DeleteRequest,
    ListResponse,
    ModelSummary,
    ProcessModel,
    ProcessResponse,
    ProgressResponse,
    PullRequest,
    ShowRequest,
    ShowResponse,
    format_timestamp,
)
from nbllm.service.common import details_of, parse_model_name
from nbllm.service.prompts import capabilities
from nbllm.store import LocalModel, ModelName
from nbllm.store.modelfile import format_parameters, render_modelfile

__all__ = ["copy_model", "delete_model", "list_models", "processor_label", "processor_text", "ps", "pull", "show"]


def list_models(rt: Runtime) -> ListResponse:
    """``/api/tags``: every local model, newest first."""
    models = []
    for m in rt.store.models():
        models.append(
            ModelSummary(
                name=m.name.display,
                model=m.name.display,
                modified_at=format_timestamp(m.modified_at.astimezone()),
                size=m.size,
                digest=m.digest,
                details=details_of(m),
                capabilities=_listed_capabilities(rt, m),
            )
        )
    return ListResponse(models=models)


def _listed_capabilities(rt: Runtime, model: LocalModel) -> list[str] | None:
    """A listed model's capabilities, as Ollama's list shows them (none for one that cannot be read)."""
    if model.model_path is None or model.problems:
        return None
    try:
        return capabilities(model, rt.store.gguf(model))
    except NbllmError:
        return None


def show(rt: Runtime, req: ShowRequest) -> ShowResponse:
    """``/api/show``: template, parameters, Modelfile, GGUF metadata and capabilities of a model."""
    model = rt.store.find(parse_model_name(req.model))
    if model is None:
        raise ModelNotFound(req.model)
    info = rt.store.gguf(model, verbose=req.verbose) if model.model_path else None
    params = dict(model.params)
    if req.options:
        # known options only, validated (a wrong type is a 400; an unknown key is ignored, as at inference)
        params.update(parse_api_options(req.options))
    system = req.system if req.system is not None else model.system
    template = model.template if model.template is not None else (info.chat_template if info else None)
    return ShowResponse(
        license="\n".join(model.license) or None,
        modelfile=render_modelfile(model, system=system, params=params),
        parameters=format_parameters(params) or None,
        template=template,
        system=system,
        details=details_of(model),
        messages=[dict(m) for m in model.messages] or None,  # type: ignore[misc]
        model_info=_model_info(info.metadata if info else {}),
        tensors=info.tensors if info and req.verbose else None,
        capabilities=capabilities(model, info) if info else [],
        modified_at=format_timestamp(model.modified_at.astimezone()),
    )


def _model_info(metadata: dict[str, Any]) -> dict[str, Any]:
    """GGUF metadata as Ollama shows it: no name or chat template; long arrays are null unless verbose."""
    hidden = {"general.name", "tokenizer.chat_template"}
    return {k: v for k, v in metadata.items() if k not in hidden}


def processor_label(size: int, size_vram: int) -> str:
    """``100% CPU``, ``100% GPU`` or ``48%/52% CPU/GPU``, as ``ollama ps`` prints it.

    >>> processor_label(100, 0), processor_label(100, 100), processor_label(100, 52)
    ('100% CPU', '100% GPU', '48%/52% CPU/GPU')
    """
    if size_vram <= 0 or size <= 0:
        return "100% CPU"
    if size_vram >= size:
        return "100% GPU"
    gpu = round(size_vram * 100 / size)
    return f"{100 - gpu}%/{gpu}% CPU/GPU"


def processor_text(model: ProcessModel) -> str:
    """The PROCESSOR column of ``ps``: Ollama's label, then the GPUs it runs on, if any.

    >>> m = dict(name="m", model="m", size=100, digest="d", details={}, expires_at="", context_length=1)
    >>> processor_text(ProcessModel(**m, size_vram=100, devices=["CUDA0"]))
    '100% GPU (CUDA0)'
    >>> processor_text(ProcessModel(**m, size_vram=0, devices=["CPU"]))
    '100% CPU'
    """
    label = model.processor or processor_label(model.size, model.size_vram)
    gpus = [d for d in model.devices or () if d != "CPU"]
    return f"{label} ({', '.join(gpus)})" if gpus else label


def ps(rt: Runtime) -> ProcessResponse:
    """``/api/ps``: loaded models, with nbllm's processor split and queue depth."""
    out = []
    for view in rt.scheduler.ps():
        out.append(
            ProcessModel(
                name=view.name,
                model=view.name,
                size=view.size,
                digest=view.model.digest,
                details=details_of(view.model),
                expires_at=format_timestamp(view.expires_at.astimezone()),
                size_vram=view.size_vram,
                context_length=view.context_length,
                processor=processor_label(view.size, view.size_vram),
                devices=list(view.devices) or None,
                active_requests=view.active,
                queued_requests=view.queued,
                prompt_cache=view.prompt_cache,
            )
        )
    return ProcessResponse(models=out)


def pull(rt: Runtime, req: PullRequest) -> Iterator[ProgressResponse]:
    """``/api/pull``: Ollama's progress statuses while the model is fetched into the store.

    Built-in library names come from the package index; other names from Hugging Face or an
    Ollama-protocol registry (``service.registry``).
    """
    from nbllm.store.catalog import find_entry

    name = parse_model_name(req.model)
    if find_entry(name) is None:
        from nbllm.service.registry import pull_remote

        yield from pull_remote(rt, name, insecure=req.insecure)
        return
    from nbllm.remote.pull import PackageIndexClient, pull_model  # network code only when pulling

    with PackageIndexClient(rt.index_config()) as index:
        yield from pull_model(rt.store, name, index, prune=not rt.settings.noprune)


def copy_model(rt: Runtime, req: CopyRequest) -> None:
    """``/api/copy``: a second name for the same blobs."""
    for label, value in (("source", req.source), ("destination", req.destination)):
        if not ModelName.is_valid(value):
            raise InvalidModelName(f'{label} "{value}" is invalid')
    if rt.store.find(req.source) is None:
        raise ModelNotFound(req.source, quote='"')
    rt.store.copy(req.source, req.destination)


def delete_model(rt: Runtime, req: DeleteRequest) -> None:
    """``/api/delete``: remove a model's manifest and the blobs nothing else uses."""
    if not req.model:
        raise InvalidRequest("model is required")
    if not ModelName.is_valid(req.model):
        raise InvalidModelName(f'name "{req.model}" is invalid')
    name = ModelName.parse(req.model)
    try:
        found = rt.store.find(name)
    except StoreError:  # a manifest that cannot be read: removing it is the repair (its blobs go at the next prune)
        rt.store.manifests.delete(name)
        return
    if found is None:
        raise ModelNotFound(req.model)
    rt.store.delete(name)
