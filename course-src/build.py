"""Build the course notebooks ``notebooks/NN_name.ipynb`` from their sources ``course-src/NN_name.py``
(percent format: ``# %% [markdown]`` and ``# %%`` start cells). The notebooks are written stripped of outputs
(execution_count null), the policy ``tests/test_notebooks_clean.py`` enforces. Each ``#``/``##``
heading starts a slide: present live with jupyterlab-rise (``Alt+R``; the notebook's ``rise`` metadata
lets long slides scroll), export with ``make slides`` (``jupyter nbconvert --to slides``); tests/test_slides.py.

    python course-src/build.py            # rebuild every notebook
    python course-src/build.py 04         # rebuild the notebooks whose name contains 04

The sources and this builder live outside ``notebooks/`` so that the folder a learner opens holds only the course.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent  # course-src/: the sources
NOTEBOOKS = HERE.parent / "notebooks"  # what learners open: the built notebooks and nothing else
MARKER = re.compile(r"^# %%( \[markdown\])?\s*$", re.M)
HEADING = re.compile(r"#{1,2} ")  # a `#` or `##` heading starts a slide
KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}
RISE = {"scroll": True, "transition": "none", "slideNumber": "c/t"}  # jupyterlab-rise settings


def cells_from_source(text: str) -> list:
    cells, parts = [], MARKER.split(text)
    for is_md, body in zip(parts[1::2], parts[2::2]):
        body = body.strip("\n")
        if is_md:
            source = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.splitlines())
            # a heading inside a markdown cell opens a cell of its own, so that it starts a slide too
            cells += [nbformat.v4.new_markdown_cell(part) for part in re.split(r"\n+(?=#{1,2} )", source)]
        else:
            cells.append(nbformat.v4.new_code_cell(body))
    for cell in cells:
        slide = cell.cell_type == "markdown" and HEADING.match(cell.source)
        cell.metadata["slideshow"] = {"slide_type": "slide" if slide else "-"}
    return cells


def build(source: Path) -> Path:
    nb = nbformat.v4.new_notebook(cells=cells_from_source(source.read_text()))
    nb.metadata.update(kernelspec=KERNEL, language_info={"name": "python"}, rise=RISE)
    for i, cell in enumerate(nb.cells):
        cell.id = f"{source.stem[:2]}-{i:02d}"
    nbformat.validate(nb)
    target = NOTEBOOKS / f"{source.stem}.ipynb"
    nbformat.write(nb, target)
    return target


if __name__ == "__main__":
    names = sys.argv[1:]
    for src in sorted(HERE.glob("[0-9][0-9]_*.py")):
        if not names or any(n in src.stem for n in names):
            print("wrote", build(src).relative_to(HERE.parent))
