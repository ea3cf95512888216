"""Every character the course shows is legible without an emoji font: the pass/fail marks of the checkers and
quizzes and every other non-ASCII character of the course's text (the notebook and homework sources, the
teaching helpers' messages) are in DejaVu Sans, the font matplotlib ships and most Linux desktops have
(JupyterLab falls back to it; an emoji such as U+2705 ✅ would render as an empty box where no emoji font is
installed)."""

from pathlib import Path

import pytest
from matplotlib import font_manager, ft2font

from mamlkit.course import feedback, widgets

ROOT = Path(__file__).resolve().parents[1]
SHOWN = [*sorted((ROOT / "mamlkit" / "course").glob("*.py")), *sorted((ROOT / "course-src").glob("*.py")),
         *sorted((ROOT / "homework" / "_src").glob("*.py"))]


def dejavu() -> set[int]:
    return set(ft2font.FT2Font(font_manager.findfont("DejaVu Sans", fallback_to_default=False)).get_charmap())


def test_the_marks_are_in_dejavu_sans():
    assert {ord(feedback.PASS), ord(feedback.FAIL)} <= dejavu()
    assert ord("✅") not in dejavu()  # the check can fail: the emoji the marks replaced is not in the font


@pytest.mark.parametrize("path", SHOWN, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_character_shown_is_in_dejavu_sans(path):
    covered = dejavu()
    missing = sorted({ch for ch in path.read_text() if ord(ch) > 127 and ord(ch) not in covered})
    assert not missing, f"{path.name}: {missing} render as empty boxes without an emoji font; use e.g. ✔ ✘ ⚠"


def test_checker_and_quiz_print_the_marks(capsys):
    assert feedback.checker(lambda fn: "fine")(None) is True
    assert capsys.readouterr().out.startswith(f"{feedback.PASS} fine")
    q = widgets.quiz("2 + 2?", ("4", "two and two make four"), {"3": "three is one short: add the two again"})
    q.choice.value = "3"
    assert q.feedback.value.startswith(feedback.FAIL)
