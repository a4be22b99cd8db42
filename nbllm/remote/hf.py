"""Pulling GGUF models from Hugging Face: ``hf.co/{user}/{repo}[:{quant}]`` and ``huggingface.co/...``.

As with Hugging Face's Ollama integration, the tag picks the GGUF file: a quantization name matched
case-insensitively (``:q8_0``, ``:IQ3_M``) or the full ``.gguf`` file name; ``latest`` takes Q4_K_M
when the repository has it, else the nearest reasonable quantization. The model runs with the chat
template inside the GGUF; optional ``template`` (Go), ``system`` and ``params`` (JSON) files in the
repository become layers, as the Hub's own registry does.

huggingface_hub lists the repository (with each file's sha256), builds the download URLs for
``HF_ENDPOINT``, adds ``HF_TOKEN`` (both read by huggingface_hub itself) and finds files already in
the local Hugging Face cache, which are copied in, verified, without downloading anything. Other
files are downloaded by nbllm's resumable, verified blob fetcher (``remote.transfer``): recent
huggingface_hub releases no longer resume a download after the process dies, and a model pull must.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, get_token, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

from nbllm._version import __version__
from nbllm.errors import NbllmError, PullError, RegistryUnreachable
from nbllm.remote.registry import RegistryClient
from nbllm.remote.transfer import BlobFetch, fetch_blobs
from nbllm.schema import ProgressResponse
from nbllm.store.gguf import read_gguf
from nbllm.store.hub_library import HubEntry
from nbllm.store.local import ModelStore
from nbllm.store.manifests import MEDIA_MODEL, MEDIA_PARAMS, MEDIA_SYSTEM, MEDIA_TEMPLATE, Layer
from nbllm.store.names import DEFAULT_TAG, ModelName

__all__ = [
    "HF_HOSTS",
    "HubFile",
    "HubOptions",
    "is_hf_name",
    "pull_hf_model",
    "pull_hub_entry",
    "quant_of",
    "select_gguf",
]

log = logging.getLogger(__name__)

HF_HOSTS = frozenset({"hf.co", "huggingface.co"})
"""Registry hosts that mean "a Hugging Face repository"."""

# Preference when the tag is ``latest``: Q4_K_M first, as the Hub does, then similar sizes.
_PREFERRED = (
    "Q4_K_M", "Q4_K_S", "Q4_0", "Q4_1", "IQ4_XS", "IQ4_NL", "Q5_K_M", "Q5_K_S", "Q5_0", "Q5_1",
    "Q6_K", "Q8_0", "Q3_K_M", "Q3_K_L", "Q3_K_S", "IQ3_M", "IQ3_XS", "Q2_K", "F16", "BF16", "F32",
)  # fmt: skip
_QUANT = re.compile(
    r"(?<![A-Za-z0-9])(I?Q[1-8]_(?:[0-9]|K|NL|XXS|XS|S|M|L)(?:_(?:[0-9]|XXS|XS|XL|S|M|L))*"
    r"|TQ[12]_0|MXFP4(?:_MOE)?|BF16|FP16|FP32|F16|F32)(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_EXTRAS = {"template": MEDIA_TEMPLATE, "system": MEDIA_SYSTEM, "params": MEDIA_PARAMS}


@dataclass(frozen=True)
class HubOptions:
    """Where the Hub is; ``None`` everywhere means huggingface_hub's own defaults (HF_ENDPOINT, HF_TOKEN, ...)."""

    endpoint: str | None = None
    """Hub URL (default: ``HF_ENDPOINT``, else https://huggingface.co)."""
    token: str | bool | None = None
    """Access token (default: ``HF_TOKEN`` or the saved login; ``False``: send none)."""
    cache_dir: Path | None = None
    """Hugging Face cache to reuse (default: ``HF_HUB_CACHE``/``HF_HOME``)."""


@dataclass(frozen=True)
class HubFile:
    """A file of a Hub repository."""

    name: str
    size: int
    sha256: str | None = None
    """Hex sha256 of an LFS file (every GGUF on the Hub)."""


def is_hf_name(name: ModelName) -> bool:
    """Whether a model name points at Hugging Face.

    >>> is_hf_name(ModelName.parse("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"))
    True
    >>> is_hf_name(ModelName.parse("llama3.2"))
    False
    """
    return name.host.lower() in HF_HOSTS


def quant_of(filename: str) -> str | None:
    """The quantization named in a GGUF file name, upper-cased.

    >>> quant_of("SmolLM2-135M-Instruct-Q4_K_M.gguf"), quant_of("llama-3.2-1b-instruct-q8_0.gguf")
    ('Q4_K_M', 'Q8_0')
    >>> quant_of("gemma-2-2b-it-IQ3_XXS.gguf"), quant_of("model-f16.gguf"), quant_of("model.gguf")
    ('IQ3_XXS', 'F16', None)
    """
    found = _QUANT.findall(filename.removesuffix(".gguf").removesuffix(".GGUF"))
    return found[-1].upper() if found else None


def _candidates(files: Sequence[HubFile]) -> list[HubFile]:
    out = []
    for f in sorted(files, key=lambda f: f.name):
        base = f.name.rsplit("/", 1)[-1]
        split = _SPLIT.search(base)
        if not base.lower().endswith(".gguf") or "mmproj" in base.lower() or (split and split.group(1) != "00001"):
            continue
        out.append(f)
    return out


def select_gguf(files: Sequence[HubFile], tag: str, repo_id: str = "the repository") -> HubFile:
    """The GGUF a tag asks for (quant name, file name, or ``latest``); PullError naming what exists.

    >>> files = [HubFile("m-Q8_0.gguf", 1), HubFile("m-Q4_K_M.gguf", 1), HubFile("README.md", 1)]
    >>> select_gguf(files, "latest").name, select_gguf(files, "q8_0").name, select_gguf(files, "m-Q8_0.gguf").name
    ('m-Q4_K_M.gguf', 'm-Q8_0.gguf', 'm-Q8_0.gguf')
    >>> select_gguf([HubFile("m-Q8_0.gguf", 1), HubFile("m-Q4_0.gguf", 1)], "latest").name
    'm-Q4_0.gguf'
    """
    ggufs = _candidates(files)
    if not ggufs:
        raise PullError(f"pull model manifest: {repo_id} has no GGUF file (nbllm pulls GGUF repositories)")
    wanted = tag.lower()
    choice: HubFile | None
    if wanted == DEFAULT_TAG:
        by_quant = {quant_of(f.name): f for f in reversed(ggufs)}  # the first file of each quant wins
        choice = next((by_quant[q] for q in _PREFERRED if q in by_quant), ggufs[0])
    else:
        by_name = [f for f in ggufs if wanted in (f.name.lower(), f.name.rsplit("/", 1)[-1].lower())]
        matches = by_name or [f for f in ggufs if (quant_of(f.name) or "").lower() == wanted]
        choice = matches[0] if matches else None
    if choice is None:
        available = ", ".join(sorted({quant_of(f.name) or f.name for f in ggufs}))
        raise PullError(f"pull model manifest: {repo_id} has no GGUF for '{tag}' (available: {available})")
    if _SPLIT.search(choice.name):
        raise PullError(f"pull model manifest: {choice.name} is split into several files, which nbllm cannot load")
    return choice


def _list_repo(repo_id: str, hub: HubOptions) -> tuple[str, list[HubFile]]:
    """The commit of the default branch and the repository's files."""
    api = HfApi(endpoint=hub.endpoint, token=hub.token, library_name="nbllm", library_version=__version__)
    try:
        info = api.model_info(repo_id, files_metadata=True)
    except GatedRepoError as exc:
        raise PullError(
            f"pull model manifest: {repo_id} is gated: accept its terms on Hugging Face and set HF_TOKEN"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise PullError(
            f"pull model manifest: file does not exist ({repo_id} is not on the Hub, or is private: set HF_TOKEN)"
        ) from exc
    except HfHubHTTPError as exc:
        raise PullError(f"pull model manifest: {str(exc).splitlines()[0]}") from exc
    except (OSError, ValueError) as exc:
        raise PullError(f"pull model manifest: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        if not _is_transport_error(exc):
            raise
        where = hub.endpoint or "the Hugging Face Hub (HF_ENDPOINT)"
        raise RegistryUnreachable(
            f"pull model manifest: {where} could not be reached ({type(exc).__name__}: {exc})"
        ) from exc
    files = [
        HubFile(s.rfilename, s.size or 0, s.lfs.sha256 if s.lfs is not None else None) for s in info.siblings or []
    ]
    return str(info.sha), files


_TRANSPORTS = ("httpx", "httpx2", "httpcore", "requests", "urllib3")


def _is_transport_error(exc: BaseException) -> bool:
    """Whether huggingface_hub let its HTTP library's own error out (a refused connection, DNS, a timeout).

    Its releases use requests, httpx or httpx2, whose errors share no base class with nbllm's or
    ``OSError``; they are told apart by the library they come from.
    """
    return any(cls.__module__.split(".")[0] in _TRANSPORTS for cls in type(exc).__mro__)


def _extras(
    registry: RegistryClient, repo_id: str, commit: str, files: Sequence[HubFile], hub: HubOptions
) -> list[tuple[str, str]]:
    """``template``, ``system`` and ``params`` files of the repository, as (media type, text)."""
    out = []
    for f in files:
        media = _EXTRAS.get(f.name)
        if media is None:
            continue
        url = hf_hub_url(repo_id, f.name, revision=commit, endpoint=hub.endpoint)
        resp = registry.send("GET", url, headers=_headers(hub))
        if resp.status_code != 200:
            raise PullError(f"pull model manifest: {f.name} of {repo_id}: HTTP {resp.status_code}")
        text = resp.text
        if media == MEDIA_PARAMS and not _is_json_object(text):
            log.warning("ignoring %s of %s: not a JSON object", f.name, repo_id)
            continue
        out.append((media, text))
    return out


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _headers(hub: HubOptions) -> dict[str, str]:
    """The Hub's bearer token: the given one, else huggingface_hub's (``HF_TOKEN`` or the saved login)."""
    token = hub.token if isinstance(hub.token, str) else (get_token() if hub.token is not False else None)
    return {"Authorization": f"Bearer {token}"} if token else {}


def _model_fetch(repo_id: str, commit: str, gguf: HubFile, hub: HubOptions) -> BlobFetch:
    """Where the GGUF comes from: the Hugging Face cache if it holds this revision's file, else the Hub."""
    if gguf.sha256 is None:
        raise PullError(f"pull model manifest: the Hub gives no sha256 for {gguf.name}, so it cannot be verified")
    digest = f"sha256:{gguf.sha256}"
    cached = try_to_load_from_cache(repo_id, gguf.name, cache_dir=hub.cache_dir, revision=commit)
    if isinstance(cached, str) and Path(cached).is_file():
        log.info("using %s from the Hugging Face cache", gguf.name)
        return BlobFetch(digest, gguf.size, path=Path(cached))
    url = hf_hub_url(repo_id, gguf.name, revision=commit, endpoint=hub.endpoint)
    return BlobFetch(digest, gguf.size, url=url, headers=_headers(hub))


def pull_hf_model(
    store: ModelStore,
    name: ModelName,
    registry: RegistryClient,
    *,
    hub: HubOptions | None = None,
    prune: bool = True,
    source: ModelName | None = None,
    layers: Sequence[tuple[str, str]] | None = None,
) -> Iterator[ProgressResponse]:
    """Pull a GGUF from a Hugging Face repository into the store as ``name``, yielding Ollama's statuses.

    ``source`` is the ``hf.co/<repo>:<quant>`` to pull when ``name`` is another (a built-in name),
    and ``layers`` the (media type, text) layers to give the model instead of the repository's files.
    """
    hub = hub or HubOptions()
    source = source or name
    repo_id = f"{source.namespace}/{source.model}"
    yield ProgressResponse(status="pulling manifest")
    commit, files = _list_repo(repo_id, hub)
    gguf = select_gguf(files, source.tag, repo_id)
    extras = list(layers) if layers is not None else _extras(registry, repo_id, commit, files, hub)
    fetch = _model_fetch(repo_id, commit, gguf, hub)
    with store.pin() as pin:  # the blobs stay while the manifest is not written yet
        pin.add([fetch.digest])
        yield from fetch_blobs(store, registry, [fetch])
        stored_layers = [Layer(mediaType=MEDIA_MODEL, digest=fetch.digest, size=fetch.size)]
        for media, text in extras:
            layer = store.add_text_layer(media, text, pin=pin)
            stored_layers.append(layer)
            yield ProgressResponse(
                status=f"pulling {layer.digest[7:19]}", digest=layer.digest, total=layer.size, completed=layer.size
            )
        yield ProgressResponse(status="verifying sha256 digest")
        if not store.blobs.has(fetch.digest):
            raise PullError(f"{gguf.name} vanished from the store during the pull")
        yield ProgressResponse(status="writing manifest")
        config = _config(store, fetch.digest, repo_id, gguf.name)
        with store.lock.held():  # what it replaces is read where it is replaced
            old = store.manifests.read(name)
            stored = store.write_model(name, stored_layers, config)
    yield from store.prune_replaced(old.manifest if old else None, stored.manifest, prune=prune)
    yield ProgressResponse(status="success")


def pull_hub_entry(
    store: ModelStore,
    name: ModelName,
    entry: HubEntry,
    registry: RegistryClient,
    *,
    hub: HubOptions | None = None,
    prune: bool = True,
) -> Iterator[ProgressResponse]:
    """Pull a built-in name of :mod:`nbllm.store.hub_library`: its repository's GGUF, its template and parameters."""
    yield from pull_hf_model(store, name, registry, hub=hub, prune=prune, source=entry.source(), layers=entry.layers())


def _config(store: ModelStore, digest: str, repo_id: str, filename: str) -> dict[str, Any]:
    try:
        info = read_gguf(store.blobs.path(digest))
    except NbllmError as exc:
        with store.lock.held():  # not a GGUF: of no use to anyone, pinned or not
            if digest not in store.referenced():
                store.blobs.delete(digest)
        raise PullError(f"{filename} from {repo_id} is not a readable GGUF file: {exc.message}") from exc
    return {
        "model_format": "gguf",
        "model_family": info.architecture,
        "model_families": [info.architecture],
        "model_type": info.parameter_size,
        "file_type": info.file_type,
        "architecture": "amd64",
        "os": "linux",
    }
