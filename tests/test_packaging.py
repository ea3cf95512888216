"""pyproject.toml and environment.yml name the same dependencies; the README's commands exist."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_slides import solution_bodies  # name -> body of each reference solution

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
    import torch

    from mamlkit.course.characters import PRETRAINED_FORMAT, load_pretrained

    if torch.load(path, weights_only=True, map_location="cpu").get("format") == PRETRAINED_FORMAT:
        assert load_pretrained(5, path).ways == 5  # notebook 08's pretrained body: not a run, no config
        return
    state = load_checkpoint(path)  # torch.load(weights_only=True), on the CPU
    assert state["config"]["data_dir"] is None, "clear data_dir: users' data lives elsewhere"
    assert state["iteration"] == state["history"]["iteration"][-1]


def test_time_to_accuracy_curve_is_documented_and_the_readme_quotes_it():
    import json

    curve = json.loads((ROOT / "data" / "omniglot-time-to-accuracy.json").read_text())
    assert "`omniglot-time-to-accuracy.json`" in (ROOT / "data" / "README.md").read_text()
    assert len(curve["minutes"]) == len(curve["val"]) == len(curve["iteration"]) and curve["test"]
    assert curve["config"]["data_dir"] is None and "/work" not in json.dumps(curve)
    readme = (ROOT / "README.md").read_text()
    for t in curve["test"]:
        assert t["tasks"] == 600 and f"{t['iteration']:,}" in readme
        assert f"{100 * t['mean']:.2f} ± {100 * t['ci95']:.2f}%" in readme, t


# --- the answer key stays with the instructors -----------------------------------------------------

SOLUTIONS = ROOT / "instructor" / "solutions.py"
# a reference solution that is also the library's own definition: exercise 01 re-derives the task formula
LIBRARY_DEFINES = {"sine": "mamlkit/tasks.py"}



def answers_in(files: dict[str, str]) -> list[str]:
    """``name in path`` for each reference solution whose body appears in one of ``files`` (path -> text)."""
    found = []
    for path, text in files.items():
        squashed = " ".join(text.split())
        found += [f"{name} in {path}" for name, body in solution_bodies().items()
                  if body in squashed and LIBRARY_DEFINES.get(name) != path]
    return found


def test_solutions_are_not_in_the_package():
    """``import mamlkit`` cannot reach the answer key, and no module of the package spells an answer out."""
    from importlib.machinery import PathFinder

    import mamlkit

    assert SOLUTIONS.is_file() and {"inner_update", "meta_loss", "reptile_update"} <= set(solution_bodies())
    # where `import mamlkit.solutions` looks: the package's own folder (importlib.util.find_spec would also ask
    # an editable install of another checkout, e.g. a git worktree's; the wheel test below asks it in isolation)
    assert PathFinder.find_spec("mamlkit.course", mamlkit.__path__) is not None
    assert PathFinder.find_spec("mamlkit.solutions", mamlkit.__path__) is None
    package = {p.relative_to(ROOT).as_posix(): p.read_text() for p in (ROOT / "mamlkit").rglob("*.py")}
    assert not [p for p in package if "solution" in Path(p).name]
    assert answers_in(package) == []


def test_the_leak_check_would_catch_an_answer():
    source = SOLUTIONS.read_text()
    start = source.index("def reptile_update(")
    end = source.index("def significant(")
    assert answers_in({"mamlkit/course/checks.py": source[start:end]}) == ["reptile_update in mamlkit/course/checks.py"]


def project_copy(tmp_path) -> Path:
    """The files a clone has that packaging could pick up: the package, the answer keys, the tests."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "release", "submitted", "autograded", "feedback", "*.db")
    for folder in ("mamlkit", "instructor", "homework", "tests"):  # present in the tree, as in a clone
        shutil.copytree(ROOT / folder, src / folder, ignore=skip)
    return src


HOMEWORK_ANSWERS = ("meta_sgd_update", "alpha_meta_gradient", "multi_step_loss", "adam_adapt", "first_order_gap")


@pytest.mark.slow
def test_the_sdist_has_no_solutions(tmp_path):
    """The source distribution (what `pip download --no-binary` gets) holds the library, not the answer keys."""
    import tarfile

    src = project_copy(tmp_path)
    probe = "from setuptools import build_meta as b; import sys; print(b.build_sdist(sys.argv[1]))"
    result = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "dist")], capture_output=True, text=True,
                            cwd=src)
    assert result.returncode == 0, result.stderr[-3000:]
    with tarfile.open(tmp_path / "dist" / result.stdout.split()[-1]) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
        modules = {n: tar.extractfile(m).read().decode() for m in tar.getmembers()
                   if (n := m.name.split("/", 1)[-1]).endswith(".py")}
    assert "mamlkit/maml.py" in names and "mamlkit/course/homework.py" in names
    assert [n for n in names if n.startswith(("instructor/", "homework/", "tests/")) or "solution" in n] == []
    assert answers_in(modules) == []
    assert not [n for n, text in modules.items() for f in HOMEWORK_ANSWERS if f"def {f}(" in text]


@pytest.mark.slow
def test_the_wheel_has_no_solutions(tmp_path):
    """Build the wheel as pip would install it (from a copy of the project): only ``mamlkit/``, no answers."""
    import zipfile

    src = project_copy(tmp_path)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             str(src), "-w", str(tmp_path / "dist")], capture_output=True, text=True, cwd=src)
    assert result.returncode == 0, result.stderr[-3000:]
    wheel, = (tmp_path / "dist").glob("mamlkit-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        modules = {n: z.read(n).decode() for n in names if n.endswith(".py")}
    assert "mamlkit/course/checks.py" in names and "mamlkit/maml.py" in names
    assert [n for n in names if "solution" in n or n.startswith(("instructor/", "homework/", "tests/"))] == []
    assert answers_in(modules) == []
    assert not [n for n, text in modules.items() for f in HOMEWORK_ANSWERS if f"def {f}(" in text]
    # installed alone, in an isolated interpreter (no site-packages, no editable installs): nothing to import
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    probe = ("import importlib.util as u, sys; sys.path.insert(0, sys.argv[1]); "
             "print(u.find_spec('mamlkit.course.checks') is not None, u.find_spec('mamlkit.solutions'), "
             "u.find_spec('solutions'), u.find_spec('instructor'))")
    result = subprocess.run([sys.executable, "-I", "-S", "-c", probe, str(site)], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.stdout.split() == ["True", "None", "None", "None"], result.stdout + result.stderr
