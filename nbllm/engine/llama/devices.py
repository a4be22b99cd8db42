"""The devices llama.cpp sees, through ggml's own device API (never ``nvidia-smi``).

llama-cpp-python 0.3.36 does not bind ``ggml_backend_dev_*``; this module binds the few it needs with
ctypes against the ggml libraries that the loaded ``libllama`` itself uses (the ones shipped in
``llama_cpp/lib``, or those of the build ``LLAMA_CPP_LIB_PATH`` names), so the registry read here is
the one llama.cpp offloads to.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp as L

from nbllm.engine.llama.native import backend
from nbllm.engine.offload import Device, cpu_build_warning

__all__ = ["BuildInfo", "build_info", "gpu_hardware", "list_devices", "log_hardware"]

log = logging.getLogger("nbllm.engine.llama")

_KINDS = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}


@dataclass(frozen=True)
class BuildInfo:
    """Which backends this llama.cpp was built with and whether it can offload."""

    backends: tuple[str, ...]
    """Registered backends: ``CPU``, ``CUDA``, ``Metal``, ``Vulkan``, ..."""
    gpu_offload: bool
    library: str
    """Where the loaded ``libllama`` is."""


def _libllama_dir() -> Path:
    """The folder of the ``libllama`` that llama_cpp loaded."""
    return Path(L.llama_cpp._lib._name).resolve().parent


@functools.cache
def _ggml() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    """libggml (the registry) and libggml-base (device properties), with their signatures."""
    backend()  # llama.cpp's backends are registered (and its log routed) first
    folder = _libllama_dir()
    suffix = ".dylib" if platform.system() == "Darwin" else ".so"
    reg = ctypes.CDLL(str(folder / f"libggml{suffix}"))
    base = ctypes.CDLL(str(folder / f"libggml-base{suffix}"))
    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    signatures: tuple[tuple[Any, list[Any], Any], ...] = (
        (reg.ggml_backend_dev_count, [], sz),
        (reg.ggml_backend_dev_get, [sz], vp),
        (reg.ggml_backend_reg_count, [], sz),
        (reg.ggml_backend_reg_get, [sz], vp),
        (base.ggml_backend_reg_name, [vp], ctypes.c_char_p),
        (base.ggml_backend_dev_name, [vp], ctypes.c_char_p),
        (base.ggml_backend_dev_description, [vp], ctypes.c_char_p),
        (base.ggml_backend_dev_memory, [vp, ctypes.POINTER(sz), ctypes.POINTER(sz)], None),
        (base.ggml_backend_dev_type, [vp], ctypes.c_int),
    )
    for fn, args, res in signatures:
        fn.argtypes, fn.restype = args, res
    return reg, base


def list_devices() -> list[Device]:
    """Every device llama.cpp can use, with its memory free and in total now."""
    reg, base = _ggml()
    out = []
    for i in range(int(reg.ggml_backend_dev_count())):
        dev = reg.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        base.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        out.append(
            Device(
                index=i,
                name=(base.ggml_backend_dev_name(dev) or b"").decode(errors="replace"),
                description=(base.ggml_backend_dev_description(dev) or b"").decode(errors="replace").strip(),
                kind=_KINDS.get(int(base.ggml_backend_dev_type(dev)), "other"),
                total=int(total.value),
                free=int(free.value),
            )
        )
    return out


def build_info() -> BuildInfo:
    """The backends compiled into the loaded llama.cpp."""
    reg, base = _ggml()
    names = tuple(
        (base.ggml_backend_reg_name(reg.ggml_backend_reg_get(i)) or b"").decode(errors="replace")
        for i in range(int(reg.ggml_backend_reg_count()))
    )
    return BuildInfo(backends=names, gpu_offload=bool(L.llama_supports_gpu_offload()), library=str(_libllama_dir()))


def gpu_hardware(root: Path = Path("/"), system: str | None = None, machine: str | None = None) -> str | None:
    """A GPU this machine has, whatever llama.cpp was built for (None if none is seen).

    An NVIDIA driver shows ``/dev/nvidia0`` or ``/proc/driver/nvidia``; AMD's ROCm ``/dev/kfd``; Apple
    silicon is arm64 macOS. ``root``, ``system`` and ``machine`` are for tests.
    """
    system = system or platform.system()
    machine = machine or platform.machine()
    if system == "Darwin" and machine == "arm64":
        return "Apple silicon (Metal)"
    if any(os.path.exists(root / p) for p in ("dev/nvidia0", "proc/driver/nvidia")):
        return "NVIDIA"
    if os.path.exists(root / "dev/kfd"):
        return "AMD (ROCm)"
    return None


def log_hardware(hardware: str | None = None) -> list[Device]:
    """Log, once at server start, llama.cpp's backends and devices, and warn of a GPU left unused.

    ``hardware`` is what ``gpu_hardware()`` finds unless given ("" for none). Returns the devices."""
    info = build_info()
    devices = list_devices()
    log.info(
        "llama.cpp %s built with %s (GPU offload: %s)",
        info.library,
        ", ".join(info.backends) or "no backend",
        "yes" if info.gpu_offload else "no",
    )
    for d in devices:
        log.info(
            "device %s: %s, %s, %.1f GiB total, %.1f GiB free",
            d.name,
            d.description,
            d.kind,
            d.total / 2**30,
            d.free / 2**30,
        )
    warning = cpu_build_warning(devices, hardware if hardware is not None else gpu_hardware())
    if warning:
        log.warning("%s", warning)
    return devices
