"""``%%chat --thread t --persist`` across a kernel restart, in real Jupyter kernels on SmolLM2 (issue 19, 4b).

Kernel A (its model loaded by a chat that does not persist) answers two turns of a persistent thread,
then (the thread's KV snapshot put aside) a third turn as a kernel that never restarted would. The
kernel is shut down and started again on the same ``NBLLM_HOME`` and model store: the same ``%%chat``
line continues the thread from its file, and the history's keys and values come back from the
snapshot (``prompt_cached``) instead of being evaluated. The same turn in a kernel whose snapshots
were deleted evaluates the whole history.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

from nbllm.runtime import Runtime

SYSTEM = (
    "You are a careful assistant for a data team. You answer in one short sentence, you never invent numbers, "
    "and when a question is about the notebook you say which cell you mean. Keep a friendly tone."
)
LINE = f"--thread t --persist -s '{SYSTEM}' -o temperature=0 -o seed=7 -o num_predict=12 -f text --no-stream --var r"
TURNS = ("Name one planet.", "Name another one.", "Which of the two is bigger?")
SETUP = "%load_ext nbllm\n%config NbllmMagics.host = 'local'"
REPORT = (
    "import json; t = r.timings[-1]\n"
    "print('RESULT ' + json.dumps({'text': r.text, 'prompt': t.prompt_tokens, 'cached': t.prompt_cached,"
    " 'prompt_eval_s': t.prompt_eval_s}))"
)


class Kernel:
    """A real IPython kernel (jupyter_client) on a given environment; ``run`` returns a cell's stdout."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.km: Any = None
        self.kc: Any = None

    def start(self) -> Kernel:
        """A new kernel process (as a restart starts one)."""
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env=self.env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        self.run(SETUP)
        return self

    def run(self, code: str) -> str:
        out: list[str] = []
        errors: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                errors.append(f"{msg['content']['ename']}: {msg['content']['evalue']}")

        reply = self.kc.execute_interactive(code, timeout=240, output_hook=hook)
        assert reply["content"]["status"] == "ok", errors
        return "".join(out)

    def chat(self, question: str, line: str = LINE) -> dict[str, Any]:
        self.run(f"%%chat {line}\n{question}")
        printed = self.run(REPORT)
        return dict(json.loads(printed.split("RESULT ", 1)[1]))

    def stop(self) -> None:
        """Shut down as a kernel restart does (the kernel exits normally)."""
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory, real_runtime: Runtime) -> Iterator[tuple[Path, Path]]:
    """NBLLM_HOME and a model store holding smollm2:135m (the session store's files, hard-linked)."""
    root = tmp_path_factory.mktemp("threads-kernel")
    models = root / "models"

    def link(src: str, dst: str) -> object:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        return dst

    src = real_runtime.settings.models_dir
    shutil.copytree(src, models, copy_function=link, ignore=shutil.ignore_patterns("kvstate"))
    yield root / "home", models


def _env(home: Path, models: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBLLM_", "OLLAMA_"))}
    env.update(NBLLM_HOME=str(home), NBLLM_MODELS=str(models), OLLAMA_HOST="127.0.0.1:1")
    return env


def _snapshots(models: Path) -> list[Path]:
    return sorted((models / "kvstate").glob("*/*.kv"))


def _snapshot_sizes(models: Path) -> list[int]:
    """The number of tokens in each snapshot file (from its header), smallest first."""
    sizes = []
    for path in _snapshots(models):
        with contextlib.suppress(OSError, ValueError, KeyError):
            raw = path.read_bytes()
            (n,) = struct.unpack_from("<I", raw, 8)
            sizes.append(int(json.loads(raw[12 : 12 + n])["n_tokens"]))
    return sorted(sizes)


def test_a_persistent_thread_resumes_after_a_restart_without_evaluating_its_history(
    homes: tuple[Path, Path],
) -> None:
    home, models = homes
    env = _env(home, models)
    kernel = Kernel(env).start()
    try:
        # the model loaded without snapshots (a chat that does not persist): --persist reloads it with them
        kernel.chat("Hi", "--thread other -o temperature=0 -o num_predict=4 -f text --no-stream --var r")
        first = kernel.chat(TURNS[0])
        second = kernel.chat(TURNS[1])
        assert first["text"] and second["text"]
        # snapshots are written by a background thread: the first turn's, then the second turn's, which
        # replaces it (written first, the older one removed after), so wait for that end state
        deadline = time.monotonic() + 30

        def settled() -> bool:  # one file, holding at least the second prompt (the first turn's holds less)
            sizes = _snapshot_sizes(models)
            return len(sizes) == 1 and sizes[0] >= second["prompt"]

        while not settled() and time.monotonic() < deadline:
            time.sleep(0.1)
        sizes = _snapshot_sizes(models)
        assert sizes and max(sizes) >= second["prompt"], f"the second turn's KV snapshot was not written: {sizes}"
        assert len(sizes) == 1, f"the first turn's snapshot was not replaced by the second's: {sizes}"
        kept = models.parent / "kvstate-after-two-turns"
        shutil.copytree(models / "kvstate", kept)
        saved = (home / "threads" / "t.json").read_bytes()
        # the third turn in the kernel that never restarted (not --persist: the file keeps two turns)
        never_stopped = kernel.chat(TURNS[2], LINE.replace(" --persist", ""))
    finally:
        kernel.stop()
    assert (home / "threads" / "t.json").read_bytes() == saved
    shutil.rmtree(models / "kvstate")
    shutil.copytree(kept, models / "kvstate")  # as it was after the second turn

    kernel.start()  # the kernel restarted: nothing of the thread in memory
    try:
        resumed = kernel.chat(TURNS[2])
    finally:
        kernel.stop()
    doc = json.loads((home / "threads" / "t.json").read_text())
    assert [m["role"] for m in doc["messages"]] == ["system", *["user", "assistant"] * 3]

    (home / "threads" / "t.json").write_bytes(saved)  # the same turn with the snapshots gone
    shutil.rmtree(models / "kvstate")
    kernel.start()
    try:
        evaluated = kernel.chat(TURNS[2])
    finally:
        kernel.stop()

    assert resumed["text"] == never_stopped["text"]  # greedy: the same continuation
    assert resumed["prompt"] == evaluated["prompt"] == never_stopped["prompt"] > 100
    # the whole second prompt (system, two questions, the first answer) came back from the snapshot; only
    # the second answer's end, the new question and the template around it were evaluated
    assert resumed["cached"] >= second["prompt"], (resumed, second)
    assert not evaluated["cached"], evaluated  # without the snapshot the whole history is evaluated
    print(f"\nresumed {resumed}\nevaluated {evaluated}\nnever stopped {never_stopped}")
