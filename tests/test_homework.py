"""The graded homework (homework/, nbgrader): sources and notebooks in sync; every homework checker
accepts the instructor's solution and rejects typical mistakes in one line; the student version that
``nbgrader generate_assignment`` writes carries no solution and no hidden test, and runs to the end
with readable ✘ lines; ``nbgrader autograde`` gives the solutions full points and a partial
submission partial points. Everything runs in a copy of the course under tmp_path."""

import importlib.util
import os
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient
from nbgrader.api import Gradebook
from nbgrader.apps import NbGraderAPI
from traitlets.config.loader import PyFileConfigLoader

from mamlkit.course import homework, project

pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")  # nbgrader 0.9.6 on SQLAlchemy 2.1
HOMEWORK = Path(__file__).resolve().parents[1] / "homework"
SOURCES = sorted((HOMEWORK / "_src").glob("hw*.py"))
ASSIGNMENTS = [s.stem for s in SOURCES]
GENERATED = ("release", "submitted", "autograded", "feedback", "gradebook.db", ".nbgrader.log")
SOLUTION = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)


def source_notebook(root: Path, name: str) -> Path:
    return root / "source" / name / f"{name}.ipynb"


def read(path: Path):
    return nbformat.read(path, as_version=4)


def kind(cell) -> str:
    meta = cell.metadata.get("nbgrader", {})
    return "tests" if meta.get("grade") else "answer" if meta.get("solution") else "locked"


def test_assignments_exist():
    assert ASSIGNMENTS == ["hw1_inner_update", "hw2_outer_update", "hw3_first_order_maml", "hw4_reptile",
                           "hw5_project_quadratics"]


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_source_notebook_in_sync_and_stripped(name):
    spec = importlib.util.spec_from_file_location("homework_build", HOMEWORK / "_build.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    built = builder.cells_from_source((HOMEWORK / "_src" / f"{name}.py").read_text(), name[:3])
    stored = read(source_notebook(HOMEWORK, name))
    nbformat.validate(stored)
    assert [(c.cell_type, c.source, c.metadata) for c in built] == \
        [(c.cell_type, c.source, c.metadata) for c in stored.cells], f"run python homework/_build.py {name}"
    for cell in stored.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "source notebooks are stored without outputs"
    ids = [c.metadata.nbgrader["grade_id"] for c in stored.cells]
    assert len(ids) == len(set(ids)), "grade_id must be unique"
    answers = [c for c in stored.cells if kind(c) == "answer"]
    tests = [c for c in stored.cells if kind(c) == "tests"]
    assert answers and len(tests) == len(answers)
    assert all(SOLUTION.search(c.source) for c in answers)
    assert all(HIDDEN.search(c.source) and c.metadata.nbgrader["points"] > 0 for c in tests)
    assert all(re.match(r"assert \w+\.check_\w+\(", c.source) for c in tests), "each test starts with a visible check"


# --- the checkers against the instructor's solutions, in this process ---------------------------

def solutions(name: str) -> dict:
    """The setup cell and the answer cells of an assignment's source, executed: its reference solutions."""
    namespace = {}
    for cell in read(source_notebook(HOMEWORK, name)).cells:
        if cell.cell_type == "code" and kind(cell) != "tests" and "project.run(" not in cell.source:
            exec(cell.source, namespace)
    return namespace


@pytest.fixture(scope="module")
def solved():
    return {name: solutions(name) for name in ASSIGNMENTS}


def one_line(check, answer, capsys):
    ok = check(answer)
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1 and "Traceback" not in out, out
    return ok, out.strip()


CHECKS = [("hw1_inner_update", homework.check_adaptation_curve, "adaptation_curve"),
          ("hw2_outer_update", homework.check_outer_update, "outer_update"),
          ("hw3_first_order_maml", homework.check_fomaml_update, "fomaml_update"),
          ("hw4_reptile", homework.check_reptile_step, "reptile_step"),
          ("hw5_project_quadratics", project.check_quadratic_tasks, "quadratic_tasks")]


@pytest.mark.parametrize("name, check, function", CHECKS, ids=[c[2] for c in CHECKS])
def test_solution_passes_its_checker(name, check, function, solved, capsys):
    ok, line = one_line(check, solved[name][function], capsys)
    assert ok is True and line.startswith("✔"), line


def _wrong_answers(solved):
    curve = solved["hw1_inner_update"]["adaptation_curve"]
    outer = solved["hw2_outer_update"]["outer_update"]
    fomaml = solved["hw3_first_order_maml"]["fomaml_update"]
    step = solved["hw4_reptile"]["reptile_step"]
    quadratic = solved["hw5_project_quadratics"]["quadratic_tasks"]

    def support_curve(model, params, task, loss_fn, inner_lr, inner_steps):
        swapped = type(task)(task.x_support, task.y_support, task.x_support, task.y_support)
        return curve(model, params, swapped, loss_fn, inner_lr, inner_steps)

    def uphill(model, params, *args):
        return {k: 2 * params[k].detach() - v for k, v in outer(model, params, *args).items()}

    def second_order(model, params, tasks, loss_fn, inner_lr, inner_steps, outer_lr):
        loss = maml_loss(model, params, tasks, loss_fn, inner_lr, inner_steps)
        grads = torch.autograd.grad(loss, list(params.values()))
        return {k: (v - outer_lr * g).detach() for (k, v), g in zip(params.items(), grads)}

    from mamlkit.maml import maml_loss
    from mamlkit.tasks import Task
    return [
        (homework.check_adaptation_curve, lambda *a: curve(*a)[1:], "include the loss before adapting"),
        (homework.check_adaptation_curve, support_curve, "those are support losses"),
        (homework.check_outer_update, lambda m, p, t, f, a, b: fomaml(m, p, t, f, a, 1, b), "First-Order MAML"),
        (homework.check_outer_update, uphill, "wrong sign"),
        (homework.check_fomaml_update, second_order, "second-order MAML update"),
        (homework.check_fomaml_update, lambda m, p, t, f, a, k, b: fomaml(m, p, t, f, a, 1, b), "1 inner step"),
        (homework.check_reptile_step, lambda m, p, t, f, a, k, e: step(m, p, t, f, a, k, 1.0), "all the way"),
        (homework.check_reptile_step, lambda m, p, t, f, a, k, e: step(m, p, t, f, a, 1, e), "1 inner step(s)"),
        (project.check_quadratic_tasks, lambda *a: Task(*(v.double() for v in quadratic(*a).tensors())),
         "torch.float64"),
        (project.check_quadratic_tasks, lambda n, s, q, g: quadratic(n, s, q, None), "the same seed"),
        (project.check_quadratic_tasks, lambda n, s, q, g: quadratic(n, q, s, g), "shape"),
    ]


def test_wrong_answers_get_specific_hints(solved, capsys):
    for check, wrong, hint in _wrong_answers(solved):
        ok, line = one_line(check, wrong, capsys)
        assert ok is False and line.startswith("✘") and hint in line, (check.__name__, line)


def test_project_feedback(solved, capsys):
    hyper = solved["hw5_project_quadratics"]["hyperparameters"]()
    assert project.validate_hyperparameters(hyper) == hyper
    ok, line = one_line(project.check_meta_trained, None, capsys)
    assert not ok and "no meta-trained model" in line

    def stub():
        raise NotImplementedError

    assert project.run(solved["hw5_project_quadratics"]["quadratic_tasks"], stub) is None
    assert capsys.readouterr().out.startswith("✘ not implemented yet")
    over = dict(hyper, meta_steps=10_000)
    assert project.run(solved["hw5_project_quadratics"]["quadratic_tasks"], lambda: over) is None
    assert "over the budget" in capsys.readouterr().out


# --- nbgrader: generate the student version, execute it, autograde ----------------------------

def nbgrader_api(root: Path) -> NbGraderAPI:
    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    config.CourseDirectory.root = str(root)
    return NbGraderAPI(config=config)


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A copy of homework/ with every student version generated into release/."""
    root = tmp_path_factory.mktemp("course")
    shutil.copytree(HOMEWORK, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*GENERATED, "__pycache__"))
    with pytest.MonkeyPatch.context() as mp:
        # nbgrader runs the `alembic` command of its environment to set up the gradebook
        mp.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
        mp.chdir(root)
        api = nbgrader_api(root)
        for name in ASSIGNMENTS:
            result = api.generate_assignment(name)
            assert result["success"], result.get("error", "") + result.get("log", "")
        yield root, api


def lines_only_in_regions(source: str, pattern: re.Pattern) -> set:
    """The lines of the marked regions that occur nowhere else in the notebook's text."""
    inside = {ln.strip() for region in pattern.findall(source) for ln in region.splitlines()}
    outside = {ln.strip() for ln in pattern.sub("", source).splitlines()}
    return {ln for ln in inside - outside if ln}


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_student_version_has_no_solutions_nor_hidden_tests(course, name):
    root, _ = course
    source = "\n".join(c.source for c in read(source_notebook(root, name)).cells)
    student = read(root / "release" / name / f"{name}.ipynb")
    text = "\n".join(c.source for c in student.cells)
    for pattern in (SOLUTION, HIDDEN):
        secret = lines_only_in_regions(source, pattern)
        assert secret, "every assignment has solutions and hidden tests"
        leaked = sorted(ln for ln in secret if ln in text)
        assert not leaked, f"{name}: the student version shows {leaked[:3]}"
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    assert all("raise NotImplementedError()" in c.source for c in student.cells if kind(c) == "answer")


def execute(path: Path) -> nbformat.NotebookNode:
    nb = read(path)
    # cells tagged raises-exception (the test cells) may fail; any other error fails the test here
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_student_version_runs_to_the_end_with_readable_feedback(course, name):
    root, _ = course
    nb = execute(root / "release" / name / f"{name}.ipynb")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "every cell ran"
    for cell in code:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if kind(cell) == "tests":
            assert [e.ename for e in errors] == ["AssertionError"]
            lines = stdout(cell).strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("✘ ") and "Traceback" not in lines[0], lines
        else:
            assert not errors
    assert "✘ not implemented yet" in stdout(code[2])


def submit(root: Path, student: str, name: str, nb) -> None:
    folder = root / "submitted" / student / name
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{name}.ipynb")


SINE_SETTINGS = "dict(inner_lr=0.01, inner_steps=1, outer_lr=0.001, meta_steps=200, meta_batch_size=10)"
PARTIAL = {  # the answer cells of a partial submission: index -> "solution" or the code handed in
    "hw1_inner_update": {0: "solution", 1: "def adapt(model, params, x, y, loss_fn, inner_lr, inner_steps):\n"
                                           "    for _ in range(inner_steps - 1):\n"
                                           "        params = inner_update(model, params, x, y, loss_fn, inner_lr)\n"
                                           "    return params"},
    "hw5_project_quadratics": {0: "solution", 1: f"def hyperparameters():\n    return {SINE_SETTINGS}"},
}


def partial(root: Path, name: str):
    """The student version with the first exercise solved and a wrong answer to the second."""
    student, source = read(root / "release" / name / f"{name}.ipynb"), read(source_notebook(root, name))
    answers = [i for i, c in enumerate(student.cells) if kind(c) == "answer"]
    for k, code in PARTIAL[name].items():
        student.cells[answers[k]].source = source.cells[answers[k]].source if code == "solution" else code
    return student


@pytest.fixture(scope="module")
def graded(course):
    """Autograde the instructor's solutions (alice) and a partial submission (bob): scores per test cell."""
    root, api = course
    for name in ASSIGNMENTS:
        submit(root, "alice", name, read(source_notebook(root, name)))
        if name in PARTIAL:
            submit(root, "bob", name, partial(root, name))
        for student in ("alice", "bob") if name in PARTIAL else ("alice",):
            result = api.autograde(name, student)
            assert result["success"], result.get("error", "") + result.get("log", "")
    scores = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for name in ASSIGNMENTS:
            for student in ("alice", "bob") if name in PARTIAL else ("alice",):
                grades = gradebook.find_submission_notebook(name, name, student).grades
                scores[name, student] = {g.name: (g.score, g.max_score) for g in grades}
    return root, scores


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_autograde_gives_the_solutions_full_points(graded, name):
    _, scores = graded
    grades = scores[name, "alice"]
    assert grades and all(score == points > 0 for score, points in grades.values()), grades
    nb = read(graded[0] / "autograded" / "alice" / name / f"{name}.ipynb")  # executed by nbgrader (nbconvert)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert all(stdout(c).startswith("✔ ") for c in nb.cells if kind(c) == "tests")


@pytest.mark.parametrize("name", PARTIAL)
def test_autograde_gives_a_partial_submission_partial_points(graded, name):
    root, scores = graded
    grades = scores[name, "bob"]
    tests = [c.metadata.nbgrader["grade_id"] for c in read(source_notebook(root, name)).cells if kind(c) == "tests"]
    assert grades[tests[0]][0] == grades[tests[0]][1] > 0, "the solved exercise gets its points"
    assert grades[tests[1]][0] == 0, "the wrong answer gets none"
    assert 0 < sum(s for s, _ in grades.values()) < sum(p for _, p in grades.values())
    nb = read(root / "autograded" / "bob" / name / f"{name}.ipynb")
    feedback = next(stdout(c) for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == tests[1])
    expected = {"hw1_inner_update": "✘ you took 2 inner step(s) instead of inner_steps=3: loop range(inner_steps)",
                "hw5_project_quadratics": "✘ MSE after 1 inner step(s) on 100 validation quadratics"}
    assert feedback.startswith(expected[name]) and len(feedback.strip().splitlines()) == 1, feedback
