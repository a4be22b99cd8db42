"""Settings: one frozen object, read from the environment once.

Every variable Ollama documents is honoured under its ``OLLAMA_*`` name; the ``NBLLM_*`` name of
the same setting takes precedence when both are set. No other module reads ``os.environ``.
"""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from nbllm.duration import parse_keep_alive
from nbllm.errors import ConfigError

__all__ = ["DEFAULT_PORT", "HostAddress", "Settings", "parse_host", "read_secret"]

DEFAULT_PORT = 11434
_TRUE = {"1", "t", "true", "yes", "on", "y"}
_FALSE = {"0", "f", "false", "no", "off", "n", ""}


@dataclass(frozen=True)
class HostAddress:
    """Where the server listens and where clients connect."""

    scheme: str
    host: str
    port: int
    path: str = ""

    @property
    def url(self) -> str:
        """Base URL a client uses (an all-interfaces bind is reached through loopback)."""
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        path = f"/{self.path.strip('/')}" if self.path.strip("/") else ""
        return f"{self.scheme}://{host}:{self.port}{path}"

    @property
    def bind_host(self) -> str:
        """Address the server binds (``""`` in OLLAMA_HOST=":port" means every interface)."""
        return self.host or "0.0.0.0"

    def is_loopback(self) -> bool:
        """Whether the bind address only accepts local connections."""
        if self.host in ("localhost",):
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_host(value: str | None) -> HostAddress:
    """Parse ``OLLAMA_HOST`` as Ollama does: ``host``, ``host:port``, ``:port``, ``scheme://host:port/path``.

    >>> parse_host(None)
    HostAddress(scheme='http', host='127.0.0.1', port=11434, path='')
    >>> parse_host("0.0.0.0:11434").bind_host
    '0.0.0.0'
    >>> parse_host(":8080").url
    'http://127.0.0.1:8080'
    >>> parse_host("https://example.com").port
    443
    >>> parse_host("http://[::1]:9000/ollama").url
    'http://[::1]:9000/ollama'
    >>> parse_host("example.com").url
    'http://example.com:11434'
    """
    text = (value or "").strip().strip("\"'")
    default_port = DEFAULT_PORT
    scheme, sep, hostport = text.partition("://")
    if not sep:
        scheme, hostport = "http", text
        if text == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    elif scheme == "http":
        default_port = 80
    elif scheme == "https":
        default_port = 443
    else:
        raise ValueError(f"unsupported scheme {scheme!r} (use http or https)")
    hostport, _, path = hostport.partition("/")
    host, port_text = _split_host_port(hostport)
    if host is None:
        host, port_text = (hostport.strip("[]") or "127.0.0.1"), ""
    if not port_text:
        port = default_port
    else:
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"invalid port {port_text!r}")
        port = int(port_text)
    return HostAddress(scheme=scheme, host=host, port=port, path=path)


def _split_host_port(hostport: str) -> tuple[str | None, str]:
    """Go's net.SplitHostPort: ``host:port`` or ``[v6]:port``; (None, "") when there is no port."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end == -1:
            raise ValueError(f"missing ']' in address {hostport!r}")
        rest = hostport[end + 1 :]
        if not rest.startswith(":"):
            return None, ""
        return hostport[1:end], rest[1:]
    if hostport.count(":") != 1:
        return None, ""
    host, _, port = hostport.partition(":")
    return host, port


def _aliases(name: str) -> Any:
    return AliasChoices(f"NBLLM_{name}", f"OLLAMA_{name}")


def _parse_bool(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().strip("\"'").lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"{value!r} is not a boolean (use 1/0, true/false)")
    return value


class Settings(BaseSettings):
    """nbllm's configuration. Build it with :meth:`from_env` (clear errors) or directly in tests."""

    model_config = SettingsConfigDict(env_prefix="NBLLM_", frozen=True, extra="ignore", populate_by_name=True)

    home: Path = Field(
        default_factory=lambda: Path.home() / ".nbllm",
        validation_alias="NBLLM_HOME",
        description="nbllm's data directory (history, default model store).",
    )
    host: Annotated[HostAddress, NoDecode] = Field(
        default_factory=lambda: parse_host(None),
        validation_alias=_aliases("HOST"),
        description="IP address and port of the server (default 127.0.0.1:11434).",
    )
    models: Path | None = Field(
        default=None,
        validation_alias=_aliases("MODELS"),
        description="The path to the models directory (default $NBLLM_HOME/models).",
    )
    keep_alive: float = Field(
        default=300.0,
        validation_alias=_aliases("KEEP_ALIVE"),
        description='The duration that models stay loaded in memory (default "5m"); negative = forever.',
    )
    max_loaded_models: int = Field(
        default=0,
        ge=0,
        validation_alias=_aliases("MAX_LOADED_MODELS"),
        description="Maximum number of loaded models (0 = 3 per GPU, 3 on CPU).",
    )
    max_queue: int = Field(
        default=512,
        ge=1,
        validation_alias=_aliases("MAX_QUEUE"),
        description="Maximum number of queued requests.",
    )
    num_parallel: int = Field(
        default=0,
        ge=0,
        validation_alias=_aliases("NUM_PARALLEL"),
        description="Maximum number of parallel requests per model (0 = automatic).",
    )
    noprune: bool = Field(
        default=False,
        validation_alias=_aliases("NOPRUNE"),
        description="Do not prune model blobs on startup.",
    )
    origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        validation_alias=_aliases("ORIGINS"),
        description="A comma separated list of allowed origins.",
    )
    sched_spread: bool = Field(
        default=False,
        validation_alias=_aliases("SCHED_SPREAD"),
        description="Always schedule model across all GPUs.",
    )
    tmpdir: Path | None = Field(
        default=None,
        validation_alias=_aliases("TMPDIR"),
        description="Location for temporary files (default: inside the model store).",
    )
    flash_attention: bool | None = Field(
        default=None,
        validation_alias=_aliases("FLASH_ATTENTION"),
        description="Enable flash attention (unset = automatic).",
    )
    kv_cache_type: str = Field(
        default="f16",
        validation_alias=_aliases("KV_CACHE_TYPE"),
        description="Quantization type for the K/V cache (f16, q8_0, q4_0).",
    )
    llm_library: str | None = Field(
        default=None,
        validation_alias=_aliases("LLM_LIBRARY"),
        description="Set LLM library to bypass autodetection (cpu forces CPU-only).",
    )
    gpu_overhead: int = Field(
        default=0,
        ge=0,
        validation_alias=_aliases("GPU_OVERHEAD"),
        description="Reserve a portion of VRAM per GPU (bytes).",
    )
    load_timeout: float = Field(
        default=300.0,
        validation_alias=_aliases("LOAD_TIMEOUT"),
        description='How long to allow model loads to stall before giving up (default "5m").',
    )
    debug: int = Field(
        default=0,
        ge=0,
        le=2,
        validation_alias=_aliases("DEBUG"),
        description="Show additional debug information (1 = debug, 2 = trace).",
    )
    context_length: int = Field(
        default=0,
        ge=0,
        validation_alias=_aliases("CONTEXT_LENGTH"),
        description="Default context length (0 = automatic: 4096 without a large GPU).",
    )
    nohistory: bool = Field(
        default=False,
        validation_alias=_aliases("NOHISTORY"),
        description="Do not preserve readline history.",
    )
    package_index: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        validation_alias="NBLLM_PACKAGE_INDEX",
        description="Package index URLs for built-in models (default: pip's configured indexes).",
    )
    api_key: SecretStr | None = Field(
        default=None,
        validation_alias="NBLLM_API_KEY",
        description="Require 'Authorization: Bearer <key>' on every route but / (unset = no key, as Ollama).",
    )
    max_request_size: int = Field(
        default=64 << 20,
        ge=0,
        validation_alias="NBLLM_MAX_REQUEST_SIZE",
        description="Largest JSON request body in bytes (0 = no limit); blob uploads are not limited.",
    )
    metrics: bool = Field(
        default=True,
        validation_alias="NBLLM_METRICS",
        description="Serve Prometheus metrics at /metrics.",
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        validation_alias="NBLLM_HEADER_TIMEOUT",
        description='How long a client may take to send a request\'s headers before it is closed (default "10s").',
    )
    max_connections: int = Field(
        default=4096,
        ge=1,
        validation_alias="NBLLM_MAX_CONNECTIONS",
        description="Most client connections open at once; one more is answered 503 (capped by the open-file limit).",
    )
    kv_cache_ram: int = Field(
        default=256 << 20,
        ge=0,
        validation_alias="NBLLM_KV_CACHE_RAM",
        description="Bytes of RAM per model for the KV states of slots given to other requests (0 = off).",
    )
    kv_snapshots: bool = Field(
        default=False,
        validation_alias="NBLLM_KV_SNAPSHOTS",
        description="Keep finished conversations' KV states in the store and resume from them (docs/kv-snapshots.md).",
    )
    kv_snapshots_max: int = Field(
        default=4 << 30,
        ge=0,
        validation_alias="NBLLM_KV_SNAPSHOTS_MAX",
        description="Bytes of disk for KV snapshots; the least recently used go first.",
    )

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Read the environment once; a bad value raises ConfigError naming the variable."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None
        except SettingsError as exc:
            raise ConfigError(f"invalid environment: {exc}") from None

    @property
    def models_dir(self) -> Path:
        """The model store's root directory."""
        return self.models if self.models is not None else self.home / "models"

    @field_validator("host", mode="before")
    @classmethod
    def _host(cls, value: Any) -> Any:
        return parse_host(value) if isinstance(value, str) or value is None else value

    @field_validator("keep_alive", "load_timeout", "header_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str):
            parsed = parse_keep_alive(value, numbers_as_strings=True)
            return math.inf if parsed is None else parsed
        return value

    @field_validator("noprune", "sched_spread", "nohistory", "flash_attention", "metrics", mode="before")
    @classmethod
    def _bool(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return _parse_bool(value)

    @field_validator("debug", mode="before")
    @classmethod
    def _debug(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip().isdigit():
            return int(_parse_bool(value))
        return value

    @field_validator("origins", "package_index", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("api_key", mode="before")
    @classmethod
    def _key(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip().strip("\"'") or None  # an empty NBLLM_API_KEY means no key
        return value

    @field_validator("models", "tmpdir", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip().strip("\"'")
            return Path(text).expanduser() if text else None
        return value

    @field_validator("kv_cache_type", mode="before")
    @classmethod
    def _kv_type(cls, value: Any) -> Any:
        text = str(value).strip().lower() or "f16"
        if text not in {"f16", "f32", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"}:
            raise ValueError(f"unknown cache type {value!r} (use f16, q8_0 or q4_0)")
        return text


def _describe(exc: ValidationError) -> str:
    """Name the environment variable behind each failing field."""
    lines = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "?"
        names = _env_names(field)
        present = [n for n in names if n in os.environ] or names
        shown = present[0]
        value = os.environ.get(shown, err.get("input"))
        message = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"invalid value {value!r} for {shown}: {message}")
    return "; ".join(lines)


def _env_names(field: str) -> list[str]:
    if field not in Settings.model_fields:  # pydantic reports the alias that was used
        for name, candidate in Settings.model_fields.items():
            alias = candidate.validation_alias
            choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
            if field in choices:
                field = name
                break
        else:
            return [field]
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        return [str(c) for c in alias.choices]
    if isinstance(alias, str):
        return [alias]
    return [f"NBLLM_{field.upper()}"]


def read_secret(name: str) -> SecretStr | None:
    """The secret (a remote backend's API key) in the environment variable ``name``; None if unset or empty."""
    value = os.environ.get(name, "").strip().strip("\"'")
    return SecretStr(value) if value else None
