"""The course as a static web site (config in site/, Jupyter Book 1, built by `make site`): the table of
contents lists exactly the notebooks in notebooks/, in order, so a new notebook cannot be left off the site,
and the build executes every notebook and fails on a failing cell. Building the site itself executes every
notebook in full (minutes on 2 cores); the suite does not: it already executes each notebook with nbval."""

import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")  # comes with jupyterlab (jupyter_events)

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "site"


def toc_files(node) -> list[str]:
    """Every ``file:`` entry of a Jupyter Book table of contents, depth first, in order."""
    if isinstance(node, list):
        return [f for child in node for f in toc_files(child)]
    if isinstance(node, dict):
        own = [node["file"]] if "file" in node else []
        return own + [f for key in ("parts", "chapters", "sections") for f in toc_files(node.get(key, []))]
    return []


def test_toc_lists_every_notebook_in_order():
    toc = yaml.safe_load((SITE / "_toc.yml").read_text())
    notebooks = [f"notebooks/{path.stem}" for path in sorted((ROOT / "notebooks").glob("*.ipynb"))]
    assert toc_files(toc) == notebooks, "site/_toc.yml must list every notebook of notebooks/, in order"
    assert (SITE / f"{toc['root']}.md").is_file()


def test_config_executes_every_notebook_and_fails_on_errors():
    config = yaml.safe_load((SITE / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "force" and not config["execute"]["allow_errors"]
    assert config["sphinx"]["config"]["nb_execution_raise_on_error"]
    assert config["only_build_toc_files"]


def test_make_site_builds_what_the_toc_names():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^site:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert "cp notebooks/*.ipynb _build/site/notebooks/" in recipe and "cp site/*.yml site/*.md" in recipe
    assert "env -u MAMLKIT_FAST" in recipe  # the site shows full runs, not CI's shortcuts
    assert "jupyter_server_mathjax" in recipe and "_build/site/_mathjax/mathjax" in recipe  # MathJax, offline


def test_config_loads_nothing_from_the_internet():
    """MathJax from the copy `make site` puts in _mathjax/ (published as _static/mathjax); tests/test_browser.py
    opens a built page with the network off."""
    config = yaml.safe_load((SITE / "_config.yml").read_text())["sphinx"]["config"]
    assert config["html_static_path"] == ["_mathjax"]
    assert config["mathjax_path"].startswith("mathjax/MathJax.js?config=") and "://" not in config["mathjax_path"]
    assert config["mathjax2_config"]["HTML-CSS"]["webFont"] == "STIX-Web"  # the fonts jupyter-server-mathjax ships
    assert config["mathjax3_config"] == {} and config["myst_update_mathjax"] is False  # no MathJax 3 settings
