"""llama.cpp's AMX kernels kept out of the way: they crash in llama-cpp-python 0.3.36 (``native.amx_kernels``).

A CPU with AMX (Xeon Sapphire Rapids and later) gets them from llama-cpp-python's ``-march=native`` build, and
the first matrix product then kills the process. These tests load the real model with the real library: on such
a machine the decode below is the crash; on any other they check the load settings the model is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import llama_cpp as L
import pytest

from nbllm.engine import FinalStats, LoadSpec, SamplingParams
from nbllm.engine.llama import LlamaEngine, native


def test_amx_kernels_reads_the_build_s_own_system_info() -> None:
    assert native.amx_kernels() == (b"AMX_INT8 = 1" in L.llama_print_system_info())


@pytest.mark.parametrize("amx", [True, False])
def test_weights_stay_out_of_the_extra_buffers_exactly_when_the_build_has_amx(
    smollm2_gguf: Path,
    monkeypatch: pytest.MonkeyPatch,
    amx: bool,  # noqa: FBT001 - a parameter of the test
) -> None:
    seen: list[bool] = []
    load = L.llama_model_load_from_file

    def spy(path: bytes, mp: Any) -> Any:
        seen.append(bool(mp.use_extra_bufts))
        return load(path, mp)

    monkeypatch.setattr(native, "amx_kernels", lambda: amx)
    monkeypatch.setattr(L, "llama_model_load_from_file", spy)
    model = native.NativeModel(LoadSpec(path=smollm2_gguf, num_ctx=256))
    try:
        assert seen == [not amx]
    finally:
        model.free()


def test_a_generation_runs_on_this_machine_s_build(smollm2_gguf: Path) -> None:
    """The crash itself, where there is one to have: ``amx_kernels`` as the build says, a real decode."""
    engine = LlamaEngine(LoadSpec(path=smollm2_gguf, num_ctx=256, num_thread=2))
    try:
        events = list(engine.generate([1, 2, 3], SamplingParams(temperature=0.0, num_predict=4)))
    finally:
        engine.close()
    final = events[-1]
    assert isinstance(final, FinalStats) and final.eval_count == 4
