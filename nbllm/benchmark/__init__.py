"""A serving benchmark in the manner of ``vllm bench serve``, against any Ollama-API or OpenAI-compatible host.

``run_benchmark(BenchSpec(targets=("http://127.0.0.1:11434",), models=("smollm2:135m",),
concurrency=(1, 2, 4)))`` returns a :class:`BenchResult`: ``.requests`` and ``.runs`` DataFrames,
``.vllm_json()``, ``.save(directory)`` (CSV, vLLM JSON, PNG plots) and ``.plots()``. The CLI is
``nbllm bench``; the notebook's is ``nbllm.notebook.bench.run_serving_bench``.
"""

from __future__ import annotations

from nbllm.benchmark.result import BenchResult
from nbllm.benchmark.runner import ProgressBar, run_benchmark
from nbllm.benchmark.spec import SLO, BenchSpec, DatasetSpec, LoadPoint

__all__ = ["SLO", "BenchResult", "BenchSpec", "DatasetSpec", "LoadPoint", "ProgressBar", "run_benchmark"]
