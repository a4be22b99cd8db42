"""Run a llama-cpp-python program with the weights kept out of llama.cpp's extra buffer types where the build has
AMX kernels, which crash in the llama-cpp-python builds here (``nbllm.engine.llama.native.amx_kernels``, docs/gpu.md
"A CPU with AMX"): the peers then run as nbllm does. Elsewhere it changes nothing.

Usage, in the peer's interpreter: python plain_buffers.py -m llama_cpp.server ARGS...  (as python -m llama_cpp.server)

``raw.py``, run as a script beside it, imports :func:`plain_buffers` for the same change in its own process.
llama-cpp-python's ``Llama`` has no option for it: the change is to its default model parameters, which it reads
when it loads a model.
"""

from __future__ import annotations

import runpy
import sys

import llama_cpp.llama_cpp as C


def plain_buffers() -> bool:
    """Where this build has AMX kernels, load every model from now on with ``use_extra_bufts = False``; whether so."""
    if b"AMX_INT8 = 1" not in C.llama_print_system_info():
        return False
    default = C.llama_model_default_params

    def params() -> C.llama_model_params:
        mp: C.llama_model_params = default()
        mp.use_extra_bufts = False
        return mp

    C.llama_model_default_params = params
    return True


def main(argv: list[str]) -> None:
    """``-m MODULE ARGS...``: run MODULE as ``python -m`` would, after :func:`plain_buffers`."""
    if len(argv) < 2 or argv[0] != "-m":
        raise SystemExit("usage: python plain_buffers.py -m MODULE [ARGS...]")
    plain_buffers()
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
