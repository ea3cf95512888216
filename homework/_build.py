"""Build the instructor (source) notebooks of the homework from ``homework/_src/*.py``, in the layout
nbgrader expects: ``homework/source/<assignment>/<assignment>.ipynb``, stored without outputs.

Percent format, with the nbgrader cell type on the marker line:

    # %% [markdown]                        read-only text
    # %%                                   read-only code (setup)
    # %% answer id=inner_update            autograded answer: ### BEGIN SOLUTION / ### END SOLUTION inside
    # %% tests id=test_inner_update points=3   autograder tests: visible checks, then
                                           ### BEGIN HIDDEN TESTS / ### END HIDDEN TESTS

    python homework/_build.py              # rebuild every assignment
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
MARKER = re.compile(r"^# %%(?: \[(markdown)\])?(?: (answer|tests))?((?: \w+=\S+)*)[ \t]*$", re.M)
KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}


def nbgrader_metadata(kind: str | None, grade_id: str, points: int = 0) -> dict:
    """nbgrader's cell metadata (schema 3): read-only, autograded answer, or autograder tests."""
    meta = {"grade": kind == "tests", "grade_id": grade_id, "locked": kind != "answer", "schema_version": 3,
            "solution": kind == "answer", "task": False}
    if kind == "tests":
        meta["points"] = points
    return meta


def cells_from_source(text: str, prefix: str) -> list:
    cells, parts = [], MARKER.split(text)
    for i, (is_md, kind, options, body) in enumerate(zip(*(parts[k::4] for k in range(1, 5)))):
        body, options = body.strip("\n"), dict(o.split("=") for o in options.split())
        if is_md:
            lines = body.splitlines()
            cell = nbformat.v4.new_markdown_cell("\n".join(ln[2:] if ln.startswith("# ") else ln.lstrip("#")
                                                           for ln in lines))
        else:
            cell = nbformat.v4.new_code_cell(body)
        grade_id = options.get("id", f"{prefix}-{i:02d}")
        cell.metadata["nbgrader"] = nbgrader_metadata(kind, grade_id, int(options.get("points", 0)))
        if kind == "tests":  # "Run all" goes on past a failing test cell (JupyterLab, nbclient)
            cell.metadata["tags"] = ["raises-exception"]
        cell.id = grade_id
        cells.append(cell)
    return cells


def build(source: Path) -> Path:
    nb = nbformat.v4.new_notebook(cells=cells_from_source(source.read_text(), source.stem[:3]))
    nb.metadata.update(kernelspec=KERNEL, language_info={"name": "python"})
    nbformat.validate(nb)
    target = HERE / "source" / source.stem / f"{source.stem}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return target


def sources() -> list[Path]:
    return sorted((HERE / "_src").glob("hw*.py"))


if __name__ == "__main__":
    names = sys.argv[1:]
    for src in sources():
        if not names or any(n in src.stem for n in names):
            print("wrote", build(src).relative_to(HERE.parent))
