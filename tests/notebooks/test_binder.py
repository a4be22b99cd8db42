"""The Binder setup (``binder/``) follows repo2docker's rules, and it builds an environment where nbllm works.

The rules checked are those of repo2docker's docs and source (``repo2docker/buildpacks``): one config
folder, ``runtime.txt`` as ``python-X.Y``, ``requirements.txt`` without local references (so that it is
installed in a cached layer before the repository is copied in), and ``postBuild`` an executable
script with a shebang that stops on the first error. The slow test builds the environment the way
repo2docker does — a fresh virtual environment, ``pip install -r binder/requirements.txt``, then
``binder/postBuild`` from a copy of the repository — with the model pulled from the loopback index.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from IPython.core.inputtransformer2 import TransformerManager
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from nbllm.store.catalog import find_entry
from nbllm.store.names import ModelName
from tests.notebooks.harness import NOTEBOOKS, REPO
from tests.support.index_server import IndexServer

BINDER = REPO / "binder"
SUPPORTED_PYTHONS = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.14")
"""The Python versions repo2docker can install (``buildpacks/conda/supported_python_version.py``)."""


def _pyproject() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with (REPO / "pyproject.toml").open("rb") as f:
        data: dict[str, Any] = tomllib.load(f)
    return data


def _requirements() -> list[Requirement]:
    """binder/requirements.txt, one requirement a line (comments and blank lines skipped)."""
    lines = (BINDER / "requirements.txt").read_text().splitlines()
    return [Requirement(line.split("#", 1)[0].strip()) for line in lines if line.split("#", 1)[0].strip()]


def _postbuild_commands() -> list[str]:
    lines = (BINDER / "postBuild").read_text().splitlines()
    return [line.strip() for line in lines[1:] if line.strip() and not line.strip().startswith("#")]


def test_one_config_folder() -> None:
    """repo2docker reads binder/ (and then ignores the root's pyproject.toml); binder/ with .binder/ is an error."""
    assert BINDER.is_dir()
    assert not (REPO / ".binder").exists()


def test_postbuild_is_an_executable_bash_script_that_stops_on_errors() -> None:
    path = BINDER / "postBuild"
    assert path.stat().st_mode & stat.S_IXUSR, "postBuild must be executable (git keeps the mode: chmod +x)"
    first, *_ = path.read_text().splitlines()
    assert first in ("#!/bin/bash", "#!/usr/bin/env bash")
    # repo2docker does not stop the build when a postBuild command fails unless the script says so
    assert re.search(r"^set -[a-z]*e[a-z]*( |$)", path.read_text(), re.MULTILINE)
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_runtime_pins_a_python_that_repo2docker_has_and_nbllm_supports() -> None:
    from packaging.specifiers import SpecifierSet

    text = (BINDER / "runtime.txt").read_text().strip()
    name, sep, version = text.partition("-")
    assert (name, sep) == ("python", "-"), f"runtime.txt must read python-X.Y, not {text!r}"
    assert version in SUPPORTED_PYTHONS
    assert version + ".0" in SpecifierSet(_pyproject()["project"]["requires-python"])


def test_requirements_parse_and_have_no_local_references() -> None:
    """Local references (-r, -e ., ./path, file://) would move the install after the repository copy, uncached."""
    for line in (BINDER / "requirements.txt").read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec:
            assert not spec.startswith(("-", ".", "/")) and "file://" not in spec, spec
    assert _requirements()


def test_requirements_are_nbllms_dependencies_plus_what_the_notebooks_import() -> None:
    deps = {canonicalize_name(r.name): r for r in map(Requirement, _pyproject()["project"]["dependencies"])}
    pinned = {canonicalize_name(r.name): r for r in _requirements()}
    for name, req in deps.items():
        assert name in pinned, f"binder/requirements.txt lacks nbllm's dependency {req}"
        assert pinned[name].specifier == req.specifier, f"{pinned[name]} differs from pyproject's {req}"
    extra = set(pinned) - set(deps)
    imported = {canonicalize_name(d) for m in _notebook_imports() for d in _distributions(m)}
    assert extra <= imported, f"binder/requirements.txt installs {extra - imported}, which no notebook imports"


def test_every_module_the_notebooks_import_is_installed_on_binder() -> None:
    """Each import of a notebook is the standard library, nbllm, or comes with binder/requirements.txt."""
    provided = _closure({r.name for r in _requirements()})
    missing = {
        module: dists
        for module in _notebook_imports()
        if module not in sys.stdlib_module_names and module != "nbllm"
        for dists in [_distributions(module)]
        if not dists or not {canonicalize_name(d) for d in dists} & provided
    }
    assert not missing, f"imported by the notebooks, not installed by binder/requirements.txt: {missing}"


def test_postbuild_installs_this_repository_and_pulls_a_catalog_model() -> None:
    commands = _postbuild_commands()
    installs = [c for c in commands if re.match(r"(python -m )?pip install", c)]
    assert installs and installs[0].split()[-1] == ".", "postBuild must install nbllm from the repository root"
    assert (REPO / "pyproject.toml").is_file()
    pulls = [c.split()[2] for c in commands if c.startswith("nbllm pull ")]
    assert pulls == ["smollm2:135m"]
    assert all(find_entry(ModelName.parse(name)) is not None for name in pulls)


def test_readme_has_a_binder_badge_opening_a_notebook_that_exists() -> None:
    readme = (REPO / "README.md").read_text()
    match = re.search(
        r"\[!\[[^]]*\]\(https://mybinder\.org/badge_logo\.svg\)\]\((https://mybinder\.org/v2/gh/[^)\s]+)\)", readme
    )
    assert match, "README.md lacks the 'launch on Binder' badge"
    query = parse_qs(urlsplit(match.group(1)).query)
    notebook = REPO / query["labpath"][0]
    assert notebook.is_file() and notebook.parent == NOTEBOOKS


@pytest.mark.slow
@pytest.mark.model
def test_binder_environment_builds_and_postbuild_pulls_the_model(tmp_path: Path, package_index: IndexServer) -> None:
    """As repo2docker: a fresh venv, requirements.txt, then postBuild from a copy of the repository.

    pip's cache makes this quick after the first build of llama-cpp-python (the test suite's own
    set-up built the same version); nothing but PyPI and the loopback index is reached.
    """
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    bin_dir = env_dir / "bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBLLM_", "OLLAMA_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
        VIRTUAL_ENV=str(env_dir),
        NBLLM_HOME=str(tmp_path / "home"),
        NBLLM_PACKAGE_INDEX=package_index.url,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    repo = _copy_of_repository(tmp_path / "repo")

    def run(*args: str, cwd: Path = repo) -> str:
        done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
        assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout + done.stderr

    run(str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "-r", "binder/requirements.txt")
    output = run("binder/postBuild")
    assert "success" in output
    # from outside the repository, so that `import nbllm` cannot find the source tree
    imports = "import nbllm, nbllm.notebook.magics, llama_cpp, ollama; print(nbllm.__file__)"
    where = run(str(bin_dir / "python"), "-c", imports, cwd=tmp_path)
    assert where.strip().startswith(str(env_dir)), "nbllm must be installed in the new environment"
    listing = json.loads(run(str(bin_dir / "nbllm"), "list", "--json", cwd=tmp_path))
    assert [m["name"] for m in listing["models"]] == ["smollm2:135m"]


def _copy_of_repository(dest: Path) -> Path:
    """The files git would give Binder (tracked, and new files not ignored), copied to ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def _notebook_imports() -> set[str]:
    """Top-level modules imported by the code cells of the walkthrough notebooks."""
    modules: set[str] = set()
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            if source.startswith("%%"):
                continue  # a cell magic: bash, or a prompt
            for node in ast.walk(ast.parse(TransformerManager().transform_cell(source))):
                if isinstance(node, ast.Import):
                    modules.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    modules.add(node.module.split(".")[0])
    return modules


def _distributions(module: str) -> list[str]:
    return importlib.metadata.packages_distributions().get(module, [])


def _closure(names: set[str]) -> set[str]:
    """These distributions and everything they require (their default requirements, as installed here)."""
    seen: set[str] = set()
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen
