"""The layers of the package: the algorithms (every module of ``mamlkit/`` outside ``mamlkit/course/``) never
import the course's teaching helpers, nor the libraries only those need (matplotlib, ipywidgets). Read from
the source with ``ast``, so an import inside a function counts too."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mamlkit"
COURSE = PACKAGE / "course"
CORE = sorted(p for p in PACKAGE.rglob("*.py") if COURSE not in p.parents)
FORBIDDEN = ("mamlkit.course", "matplotlib", "ipywidgets")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, module: str, is_package: bool = False) -> set[str]:
    """Absolute names of everything ``source`` (the text of ``module``) imports, relative imports resolved:
    ``from . import course`` in ``mamlkit.maml`` gives ``mamlkit.course``."""
    package = module if is_package else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - (node.level - 1)] if node.level else []
            stem = ".".join(base + ([node.module] if node.module else []))
            names.add(stem)
            names |= {f"{stem}.{alias.name}" for alias in node.names}  # `from . import course`
    return names


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    return sorted(name for name in imported(source, module, is_package)
                  if any(name == f or name.startswith(f + ".") for f in FORBIDDEN))


def test_the_core_is_found():
    names = {module_name(p) for p in CORE}
    assert {"mamlkit", "mamlkit.maml", "mamlkit.training", "mamlkit.data.omniglot"} <= names
    assert not any(name.startswith("mamlkit.course") for name in names)


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_core_never_imports_the_course(path):
    found = violations(path.read_text(), module_name(path), path.name == "__init__.py")
    assert found == [], f"{path.relative_to(ROOT)} imports {found}: the algorithms must not depend on the course"


@pytest.mark.parametrize("source, module", [
    ("from mamlkit.course import checks", "mamlkit.maml"),
    ("import mamlkit.course.widgets", "mamlkit.maml"),
    ("from .course import plots", "mamlkit.maml"),
    ("from . import course", "mamlkit.maml"),
    ("from .course.checks import Fail", "mamlkit.training"),
    ("def f():\n    from ..course import notebook", "mamlkit.data.omniglot"),
    ("from .. import course, params", "mamlkit.data.omniglot"),
    ("import matplotlib.pyplot as plt", "mamlkit.maml"),
    ("from matplotlib.figure import Figure", "mamlkit.maml"),
    ("import ipywidgets as W", "mamlkit.maml"),
])
def test_a_violation_is_caught(source, module):
    """The rule bites: each of these lines, in a core module, would fail the test above."""
    assert violations(source, module) != []


def test_relative_imports_resolve_from_the_right_package():
    assert violations("from . import course", "mamlkit.maml") == ["mamlkit.course"]
    assert violations("from .course import checks", "mamlkit", is_package=True) == ["mamlkit.course",
                                                                                 "mamlkit.course.checks"]
    assert violations("from . import maml, params\nfrom .tasks import Task\nimport torch", "mamlkit.reptile") == []
    assert violations("from .data import coursework", "mamlkit.training") == []  # a prefix of a name is not it
