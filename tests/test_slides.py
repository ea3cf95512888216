"""Lectures. Slides: each notebook exports to reveal.js (nbconvert's SlidesExporter, in-process, not
executed) with one slide per ``#``/``##`` heading, in order, lets long slides scroll under jupyterlab-rise,
and shows no reference solution from instructor/solutions.py: exercise slides carry the stubs, never the
answers. Lecture mode: ``notebook.present()`` enlarges figures and widgets, ``present(False)`` reverts; the
explorers' figures grow with the lecture font, so their titles and legends still fit."""

import ast
import re
from functools import cache
from html.parser import HTMLParser
from pathlib import Path

import IPython.display
import matplotlib as mpl
import nbformat
import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from nbconvert import SlidesExporter

from mamlkit import models, tasks
from mamlkit.course import notebook, widgets

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = ROOT / "instructor" / "solutions.py"
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


class Slides(HTMLParser):
    """The text of each top-level ``<section>`` of a reveal.js page (a nested one is a vertical sub-slide)."""

    def __init__(self, page: str):
        super().__init__()
        self.depth, self.texts = 0, []
        self.feed(page)
        self.texts = [squash("".join(parts)) for parts in self.texts]

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.texts += [[]] if self.depth == 0 else []
            self.depth += 1

    def handle_endtag(self, tag):
        self.depth -= tag == "section"

    def handle_data(self, data):
        if self.depth:
            self.texts[-1].append(data)


def squash(text: str) -> str:
    return " ".join(text.split())


@cache
def exporter():
    return SlidesExporter()


def slides(nb) -> list[str]:
    page, _ = exporter().from_notebook_node(nb)
    return Slides(page).texts


def headings(nb) -> list[str]:
    """The ``#``/``##`` headings of the markdown cells (not ``#`` lines inside fenced code), markup removed."""
    markdown = "\n".join(FENCE.sub("", c.source) for c in nb.cells if c.cell_type == "markdown")
    return [squash(re.sub(r"[*`]", "", h)) for h in re.findall(r"^#{1,2} (.+)$", markdown, re.M)]


@cache
def solution_bodies() -> dict[str, str]:
    """name -> the body of each reference solution function (docstring dropped), whitespace squashed."""
    source = SOLUTIONS.read_text()
    bodies = {}
    for fn in ast.parse(source).body:
        if isinstance(fn, ast.FunctionDef):
            body = fn.body[1:] if ast.get_docstring(fn) else fn.body
            bodies[fn.name] = squash("\n".join(ast.get_source_segment(source, stmt) for stmt in body))
    return bodies


def leaked(texts: list[str]) -> list[str]:
    return [name for name, body in solution_bodies().items() if any(body in text for text in texts)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_slide_per_heading(path):
    nb = nbformat.read(path, as_version=4)
    texts, titles = slides(nb), headings(nb)
    assert len(texts) == len(titles), f"{path.name}: {len(texts)} slides for {len(titles)} '#'/'##' headings"
    for i, (text, title) in enumerate(zip(texts, titles)):
        assert text.startswith(title), f"{path.name}: slide {i + 1} should open with '{title}', not '{text[:60]}'"
    assert nb.metadata["rise"]["scroll"], "jupyterlab-rise must let long slides scroll: run course-src/build.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_solution_on_slides(path):
    assert leaked(slides(nbformat.read(path, as_version=4))) == []


def test_a_loaded_solution_would_be_caught():
    """The leak check sees through HTML escaping and syntax highlighting: an instructor's ``%load`` of
    ``solutions.inner_update`` into the exercise cell of notebook 02 shows up as a leak."""
    assert {"inner_update", "adapt", "ci95", "reptile_update"} <= set(solution_bodies())
    nb = nbformat.read(ROOT / "notebooks" / "02_inner_update.ipynb", as_version=4)
    stub = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("def inner_update("))
    function = next(f for f in ast.parse(SOLUTIONS.read_text()).body if getattr(f, "name", "") == "inner_update")
    stub.source = "# %load -s inner_update ../instructor/solutions.py\n" + ast.get_source_segment(
        SOLUTIONS.read_text(), function)
    assert leaked(slides(nb)) == ["inner_update"]


def test_present_enlarges_figures_and_widgets_then_reverts(monkeypatch):
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, display_id: shown.append((obj.data, display_id)))
    monkeypatch.setattr(IPython.display, "update_display", lambda obj, display_id: shown.append((obj.data, display_id)))
    mpl.rcParams.update(notebook.FIGURE_DEFAULTS)
    before = dict(mpl.rcParams)
    notebook.present()
    assert mpl.rcParams["font.size"] > before["font.size"] and mpl.rcParams["figure.dpi"] > before["figure.dpi"]
    assert mpl.rcParams["figure.figsize"][0] > before["figure.figsize"][0]
    assert widgets.task_explorer().fig.dpi == mpl.rcParams["figure.dpi"]  # explorers are drawn large too
    css, display_id = shown[-1]
    assert "--jp-widgets-font-size: 20px" in css
    notebook.present()  # twice on, once off: back where it started
    notebook.present(False)
    assert dict(mpl.rcParams) == before
    assert shown[-1] == ("", display_id)  # the CSS output is emptied, so the widgets shrink back


EXPLORERS = {
    "task": lambda: widgets.task_explorer(),
    "adaptation": lambda: widgets.adaptation_explorer({"maml": models.MLP(init="torch"),
                                                       "pretrain": models.MLP(init="torch")}),
    "meta_gradient": lambda: widgets.meta_gradient_explorer(),
    "first_order": lambda: widgets.first_order_explorer(models.MLP(init="torch"),
                                                        tasks.sample_sine_tasks(4, shots=5, queries=5)),
    "reptile": lambda: widgets.reptile_explorer(),
}


def layout_faults(fig, ax) -> list[str]:
    """What does not fit, drawn as the notebook shows it: a title cut at the figure's edge, a legend outside
    the figure or over the plotted points."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer, box, faults = canvas.get_renderer(), fig.bbox, []
    title = ax.title.get_window_extent(renderer)
    if title.x0 < box.x0 - 0.5 or title.x1 > box.x1 + 0.5 or title.y1 > box.y1 + 0.5:
        faults.append(f"title '{ax.get_title()}' spans x {title.x0:.0f}..{title.x1:.0f} of {box.width:.0f} px")
    legend = ax.get_legend()
    if legend is not None:
        area = legend.get_window_extent(renderer)
        if not box.contains(area.x0, area.y0) or not box.contains(area.x1, area.y1):
            faults.append("legend outside the figure")
        points = np.concatenate([line.get_transform().transform(np.column_stack(line.get_data()).astype(float))
                                 for line in ax.get_lines()])
        points = points[np.isfinite(points).all(1)]
        covered = int(((points[:, 0] > area.x0) & (points[:, 0] < area.x1)
                       & (points[:, 1] > area.y0) & (points[:, 1] < area.y1)).sum())
        if covered:
            faults.append(f"legend covers {covered} of {len(points)} plotted points")
    return faults


@pytest.mark.parametrize("name", EXPLORERS)
def test_present_scales_explorers_and_their_text_fits(name, monkeypatch):
    monkeypatch.setattr(IPython.display, "display", lambda obj, display_id: None)
    monkeypatch.setattr(IPython.display, "update_display", lambda obj, display_id: None)
    mpl.rcParams.update(notebook.FIGURE_DEFAULTS)
    torch.manual_seed(0)
    small = EXPLORERS[name]()
    assert layout_faults(small.fig, small.ax) == [], "at the notebook's size"
    notebook.present()
    try:
        torch.manual_seed(0)
        large = EXPLORERS[name]()
        (width, height), (small_width, small_height) = large.fig.get_size_inches(), small.fig.get_size_inches()
        if small_width >= notebook.FIGURE_DEFAULTS["figure.figsize"][0]:  # the wide ones, as wide as lecture figures
            assert width >= notebook.LECTURE_FIGURES["figure.figsize"][0]
        assert large.fig.dpi == notebook.LECTURE_FIGURES["figure.dpi"]
        scale = width / small_width  # grown with the font: 15 points against 10
        assert scale == pytest.approx(notebook.LECTURE_FIGURES["font.size"] / widgets.BASE_FONT_SIZE)
        assert height / small_height == pytest.approx(scale), "same proportions"
        assert layout_faults(large.fig, large.ax) == [], "in lecture mode"
    finally:
        notebook.present(False)
