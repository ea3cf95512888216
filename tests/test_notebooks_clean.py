"""Notebook policy: stored stripped of outputs (no outputs, execution_count null), valid nbformat,
the house structure (title, setup cell, Summary / Check yourself / Exercises), no reference solutions
imported, and in sync with their sources in course-src/ (rebuild with course-src/build.py); notebooks/, the
folder a learner opens, holds the course notebooks and nothing else."""

import ast
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
SOURCES_DIR = ROOT / "course-src"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
COURSE = ["00_welcome", "01_tasks", "02_inner_update", "03_outer_update", "04_maml", "05_first_order_maml",
          "06_reptile", "07_compare", "09_beyond_maml", "10_your_own_task"]


def load(path):
    return nbformat.read(path, as_version=4)


def test_sine_track_is_complete():
    assert set(COURSE) <= {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_valid_and_stripped(path):
    nb = load(path)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has stored outputs: strip them"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
            assert "NBVAL_CHECK_OUTPUT" not in cell.source, "stored notebooks have no outputs to compare"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_closing_sections(path):
    markdown = "\n".join(c.source for c in load(path).cells if c.cell_type == "markdown")
    for heading in ["## Summary", "## Check yourself", "## Exercises"]:
        assert re.search(rf"^{re.escape(heading)}\s*$", markdown, re.M), f"{path.name} lacks '{heading}'"


@pytest.mark.parametrize("stem", COURSE)
def test_opening_cells(stem):
    nb = load(NOTEBOOKS_DIR / f"{stem}.ipynb")
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert "In this notebook you will" in nb.cells[0].source and "Prerequisites" in nb.cells[0].source
    setup = next(c for c in nb.cells if c.cell_type == "code")
    assert "setup_notebook(seed=0)" in setup.source and "import *" not in setup.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_solutions_imported(path):
    code = "\n".join(c.source for c in load(path).cells if c.cell_type == "code")
    assert "solutions" not in code, f"{path.name} must not use the reference solutions (instructor/solutions.py)"


@pytest.mark.parametrize("stem", COURSE)
def test_exercises_end_in_a_check(stem):
    nb = load(NOTEBOOKS_DIR / f"{stem}.ipynb")
    start = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "## Exercises" in c.source)
    exercises = [c.source for c in nb.cells[start:] if c.cell_type == "code"]
    assert exercises and all(re.search(r"check_\w+\(", s.strip().splitlines()[-1]) for s in exercises)
    quizzes = sum(s.source.count("widgets.quiz(") for s in nb.cells if s.cell_type == "code")
    assert 3 <= quizzes <= 5


def _builder():
    spec = importlib.util.spec_from_file_location("course_build", SOURCES_DIR / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("stem", COURSE)
def test_in_sync_with_source(stem):
    source = SOURCES_DIR / f"{stem}.py"
    built = _builder().cells_from_source(source.read_text())
    stored = load(NOTEBOOKS_DIR / f"{stem}.ipynb").cells
    assert [(c.cell_type, c.source) for c in built] == [(c.cell_type, c.source) for c in stored], \
        f"{stem}.ipynb differs from course-src/{stem}.py: run python course-src/build.py"


SOURCES = sorted(SOURCES_DIR.glob("[0-9][0-9]_*.py"))


def _global_functions(statements):
    """Functions a notebook defines in its namespace: at the top level of a cell, or inside its if/for/with/try
    blocks (not functions nested in functions or classes)."""
    for node in statements:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node
        elif not isinstance(node, ast.ClassDef):
            for field in ("body", "orelse", "finalbody", "handlers"):
                yield from _global_functions(getattr(node, field, []))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_no_function_defined_twice_with_another_signature(path):
    """A learner who runs the cells out of order must not get a function with another signature: one name,
    one signature per notebook."""
    seen = {}
    for node in _global_functions(ast.parse(path.read_text()).body):
        signature = ast.unparse(node.args)
        first = seen.setdefault(node.name, (signature, node.lineno))
        assert first[0] == signature, (f"{path.name}: `{node.name}` defined at line {first[1]} as ({first[0]}) "
                                       f"and at line {node.lineno} as ({signature}): rename one")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercise_checks_do_not_echo_true_or_false(path):
    """A cell ending in a check shows its one ✔/✘ line, not also the returned True/False: end it with `;`."""
    for cell in load(path).cells:
        lines = cell.source.strip().splitlines() if cell.cell_type == "code" else []
        if lines and re.match(r"\w+\.check_\w+\(", lines[-1]):
            assert lines[-1].rstrip().endswith(";"), f"{path.name}: end `{lines[-1]}` with `;`"


def test_learner_folder_holds_only_the_course():
    """``make course`` opens notebooks/: its file browser shows the numbered notebooks, no build machinery
    (sources, builder, timings live in course-src/)."""
    shown = sorted(p.name for p in NOTEBOOKS_DIR.iterdir() if not p.name.startswith("."))
    assert shown == [p.name for p in NOTEBOOKS], f"notebooks/ must hold only NN_name.ipynb files, not {shown}"
    sources = sorted(p.stem for p in SOURCES_DIR.glob("[0-9][0-9]_*.py"))
    assert sources == [p.stem for p in NOTEBOOKS], "every notebook has its source in course-src/ and vice versa"
