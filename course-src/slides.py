"""Export the course notebooks as reveal.js slide decks that work offline (``make slides``).

nbconvert's slides load reveal.js, require.js, jQuery and MathJax from the internet by default: offline a
deck shows no slides and raw LaTeX. This writes every deck with a ``_static/`` folder beside it holding local
copies: reveal.js 4.0.2 (the version nbconvert's template is written for), require.js and jQuery from
``course-src/vendor/`` (see its README), MathJax 2.7 from the ``jupyter-server-mathjax`` package. A deck then
opens from the file system with no network (``tests/test_browser.py`` checks it in Chromium, offline).

    python course-src/slides.py [--execute] [--output-dir _build/slides] notebooks/NN_name.ipynb ...

``--execute`` runs each notebook first, so figures and printed numbers appear on the slides; widgets need a
kernel, so their state is not embedded (present them live in JupyterLab with Alt+R instead).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
VENDOR = HERE / "vendor"
STATIC = "_static"
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"  # the configurations jupyter-server-mathjax ships
TEMPLATE = "slides-template"  # course-src/slides-template: no MermaidJS, MathJax with the fonts shipped


def mathjax_dir() -> Path:
    try:
        import jupyter_server_mathjax
    except ImportError:
        sys.exit("error: MathJax for offline slides comes with jupyter-server-mathjax: pip install -e . (or make install)")
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def copy_static(out: Path) -> Path:
    """Put reveal.js, require.js, jQuery and MathJax in ``out/_static`` (replacing an older copy)."""
    static = out / STATIC
    if static.exists():
        shutil.rmtree(static)
    shutil.copytree(VENDOR / "reveal.js", static / "reveal.js")
    for name in ("require.js", "jquery.min.js"):
        shutil.copy2(VENDOR / name, static / name)
    shutil.copytree(mathjax_dir(), static / "mathjax")
    return static


def exporter():
    """nbconvert's SlidesExporter pointed at the local copies (relative URLs: the deck and ``_static/``
    move together)."""
    from nbconvert import SlidesExporter
    from traitlets.config import Config

    c = Config()
    c.SlidesExporter.extra_template_basedirs = [str(HERE)]
    c.SlidesExporter.template_name = TEMPLATE  # reveal's, with nothing fetched from a CDN
    c.SlidesExporter.reveal_url_prefix = f"{STATIC}/reveal.js"
    c.SlidesExporter.reveal_theme = "simple"  # vendored without its web-font imports
    c.SlidesExporter.reveal_scroll = True  # long slides scroll
    c.SlidesExporter.reveal_number = "c/t"  # slide numbers, as jupyterlab-rise shows them
    c.SlidesExporter.require_js_url = f"{STATIC}/require.js"
    c.SlidesExporter.jquery_url = f"{STATIC}/jquery.min.js"
    c.SlidesExporter.mathjax_url = f"{STATIC}/mathjax/MathJax.js?config={MATHJAX_CONFIG}"
    return SlidesExporter(config=c)


def export(notebooks: list[Path], out: Path, execute: bool = False) -> list[Path]:
    """Write ``out/<name>.slides.html`` for each notebook and the ``out/_static`` they load; return the decks."""
    out.mkdir(parents=True, exist_ok=True)
    copy_static(out)
    slides, written = exporter(), []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        if execute:
            from nbconvert.preprocessors import ExecutePreprocessor

            ExecutePreprocessor(timeout=600, store_widget_state=False).preprocess(
                nb, {"metadata": {"path": str(path.parent)}})
        nb.metadata.pop("widgets", None)  # their renderer would come from a CDN, and they need a kernel
        body, _ = slides.from_notebook_node(nb)
        target = out / f"{path.stem}.slides.html"
        target.write_text(body, encoding="utf-8")
        written.append(target)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--output-dir", type=Path, default=Path("_build/slides"))
    parser.add_argument("--execute", action="store_true", help="run each notebook first (outputs on the slides)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.notebooks if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    for deck in export(args.notebooks, args.output_dir, args.execute):
        print("wrote", deck)
    print(f"open them from the file system, offline: {args.output_dir.resolve()}/00_welcome.slides.html")


if __name__ == "__main__":
    main()
