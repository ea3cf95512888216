"""pyproject.toml and environment.yml name the same dependencies; the README's commands exist."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name


def requirement_names(lines):
    return {re.split(r"[<>=!~ \[]", line.strip(), maxsplit=1)[0].lower() for line in lines if line.strip()}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_names = requirement_names(project["dependencies"] + project["optional-dependencies"]["test"])
    conda = []
    in_deps = False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if line.startswith("dependencies:"):
            in_deps = True
        elif in_deps and re.match(r"^  - [A-Za-z]", line) and not line.endswith(":"):
            conda.append(line[4:])
    conda_names = {CONDA_NAMES.get(n, n) for n in requirement_names(conda)} - {"python", "pip"}
    assert conda_names == pip_names
    assert "-e ." in (ROOT / "environment.yml").read_text()
    assert "conda-forge" in (ROOT / "environment.yml").read_text()


def test_readme_commands_are_make_targets():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("course", "test"):
        assert f"make {target}" in readme
        assert re.search(rf"^{target}:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_code_is_lint_clean():
    """ruff (configured in pyproject.toml) passes on the library, tests, notebooks and homework."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    result = subprocess.run([ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.parametrize("path", sorted((ROOT / "data").glob("*.pt")), ids=lambda p: p.name)
def test_shipped_checkpoints_are_documented_and_portable(path):
    """Every file in data/ has its command in data/README.md, loads safely and names no folder of ours."""
    from mamlkit.checkpoint import load_checkpoint

    assert f"`{path.name}`" in (ROOT / "data" / "README.md").read_text(), f"document {path.name} in data/README.md"
    state = load_checkpoint(path)  # torch.load(weights_only=True), on the CPU
    assert state["config"]["data_dir"] is None, "clear data_dir: users' data lives elsewhere"
    assert state["iteration"] == state["history"]["iteration"][-1]
