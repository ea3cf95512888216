"""The course in a real browser: JupyterLab on localhost, headless Chromium driven by Playwright.

Each notebook is copied to a temporary folder (the repository's notebooks are never saved to), opened
in JupyterLab, run with Run > Run All Cells, and checked once the kernel is idle: no error outputs,
every widget output rendered by the ipywidgets front end (no text fallback), and, in notebook 02, a
slider moved in the browser redraws the figure. A screenshot per notebook is saved to
``test-artifacts/browser/`` with the server's log. JupyterLab runs with the settings of the environment
(``make install`` copies ``jupyter-config/``): no "get notified about Jupyter news?" prompt, nothing fetched
from the internet. Offline lectures: a slide deck exported by ``course-src/slides.py`` (``make slides``) opened
from the file system with the network off initialises reveal.js and typesets its maths; so does a page of the
static site (``make site``'s configuration, one notebook, not executed).

Needs ``playwright`` (the ``test`` extra) and a Chromium on the PATH (``apt-get install chromium``;
Playwright's own browser download is not used). Skips locally without them, fails with CI=true.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ARTIFACTS = ROOT / "test-artifacts" / "browser"
SLIDER_NOTEBOOK, SLIDER_LABEL = "02_inner_update.ipynb", "inner steps"  # its adaptation explorer
NOTEBOOK_TIMEOUT = 240  # seconds to run one notebook's cells in the browser
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
# what a widget looks like when the front end cannot render it: its text/plain repr or a placeholder
FALLBACK = re.compile(r"A Jupyter widget could not be displayed|Loading widget\.\.\.|Error displaying widget"
                      r"|\b(?:Int|Float|FloatLog)Slider\(|\binteractive\(|\b(?:VBox|HBox|Quiz|Explorer|Button|Label)\(")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _unavailable(reason: str):
    """Skip with the reason; fail with it in CI (CI=true), where the browser test must run."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"browser test cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    _unavailable("no Chromium on the PATH: apt-get install -y chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server on localhost serving a temporary copy of the notebooks."""

    def __init__(self, root: Path, log: Path):
        self.root, self.log_path = root, log
        self.port, self.token = _free_port(), uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{self.port}"
        settings, state = root.parent / "lab-settings", root.parent / "lab-state"
        # every notebook cell in the DOM (no virtual scrolling); news and update checks are left to the
        # environment's settings (jupyter-config/), which test_no_news_prompt_and_nothing_fetched checks
        path = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"windowingMode": "none"}))
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                   f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                   f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
                   "--LabApp.expose_app_in_browser=True", f"--LabApp.user_settings_dir={settings}",
                   f"--LabApp.workspaces_dir={state / 'workspaces'}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(state / "runtime"), "JUPYTER_CONFIG_DIR": str(state / "config")}
        env.setdefault("MAMLKIT_FAST", "1")  # the CI switch: short runs, the browser is what is tested here
        self.log = open(log, "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(command, cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            return json.loads(body) if body else None

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.api("/api/status")
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        raise TimeoutError(f"JupyterLab did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def shutdown_kernels(self) -> None:
        for session in self.api("/api/sessions") or []:
            self.api(f"/api/sessions/{session['id']}", method="DELETE")

    def log_tail(self, chars: int = 4000) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        self.log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser") / "course"
    root.mkdir()
    for name in NOTEBOOKS:  # a copy: whatever the browser saves never reaches the repository
        shutil.copy2(ROOT / "notebooks" / name, root / name)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):  # no screenshot of an earlier run passes for this one's
        old.unlink()
    server = Lab(root, ARTIFACTS / "jupyterlab.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: pip install -e '.[test]'")
    executable = _chromium()
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


# JavaScript run in the page: the notebook panel for a path, its state, its outputs
PANEL = """(path) => {
  const app = window.jupyterapp;
  if (!app) return null;
  for (const w of app.shell.widgets('main')) if (w.context && w.context.path === path && w.content) return w;
  return null;
}"""
KERNEL_IDLE = f"""(path) => {{
  const panel = ({PANEL})(path);
  const kernel = panel && panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.status === 'idle' && kernel.connectionStatus === 'connected';
}}"""
STATE = f"""(path) => {{
  const panel = ({PANEL})(path);
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = Array.from(panel.content.widgets).filter(c => c.model.type === 'code');
  const outputs = cells.map(c => c.model.outputs.toJSON());
  return {{
    status: kernel ? kernel.status : 'none',
    busy_prompts: Array.from(panel.node.querySelectorAll('.jp-InputPrompt')).filter(
      p => p.textContent.includes('*')).length,
    code_cells: cells.length,
    executed: cells.filter(c => c.model.executionCount !== null).length,
    errors: outputs.flatMap((outs, i) => outs.filter(o => o.output_type === 'error').map(
      o => ({{cell: i, ename: o.ename, evalue: o.evalue, traceback: o.traceback.join('\\n')}}))),
    widget_outputs: outputs.flat().filter(
      o => o.data && o.data['application/vnd.jupyter.widget-view+json']).length,
  }};
}}"""
WIDGETS = f"""(path) => {{
  const panel = ({PANEL})(path);
  const views = [];  // the DOM node of every widget-view output, found through the cell's model
  for (const cell of panel.content.widgets) {{
    if (cell.model.type !== 'code') continue;
    const outputs = cell.model.outputs.toJSON();
    outputs.forEach((o, i) => {{
      if (!(o.data && o.data['application/vnd.jupyter.widget-view+json'])) return;
      const child = cell.outputArea.widgets[i];
      views.push(child ? child.node.querySelector('.jp-OutputArea-output') : null);
    }});
  }}
  return {{
    views: views.filter(v => v).length,
    rendered: views.filter(v => v && v.querySelector('.jupyter-widgets')
                                && !/Error displaying widget/.test(v.textContent)).length,
    sliders: panel.node.querySelectorAll('.widget-slider .noUi-handle').length,
    figures: Array.from(panel.node.querySelectorAll('.widget-output img')).filter(
      i => i.complete && i.naturalWidth > 0).length,
    error_mime: panel.node.querySelectorAll('[data-mime-type="application/vnd.jupyter.error"]').length,
    texts: Array.from(panel.node.querySelectorAll('.jp-OutputArea-output')).map(o => o.innerText),
  }};
}}"""


def _run_all(page, name: str, lab: Lab) -> dict:
    """Open the notebook, wait for its kernel, click Run > Run All Cells, wait until it has finished."""
    page.goto(f"{lab.url}/lab/tree/{name}?reset&token={lab.token}", wait_until="domcontentloaded")
    page.wait_for_function(KERNEL_IDLE, arg=name, timeout=120_000, polling=250)
    page.evaluate("window.jupyterapp.shell.collapseLeft()")  # the notebook wide, for the screenshots
    page.locator("#jp-MainMenu .lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    label = page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$"))
    page.locator(".lm-Menu-item:visible", has=label).click()
    deadline, idle_since = time.monotonic() + NOTEBOOK_TIMEOUT, None
    while True:
        state = page.evaluate(STATE, name)
        started = state["executed"] > 0 or state["busy_prompts"] > 0
        finished = state["executed"] == state["code_cells"] or state["errors"]  # Run All stops at an error
        if started and finished and state["status"] == "idle" and not state["busy_prompts"]:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 1.0:  # idle twice in a row, a second apart
                return state
        else:
            idle_since = None
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: not finished after {NOTEBOOK_TIMEOUT} s: {state}")
        time.sleep(0.5)


def _wait_widgets(page, name: str, expected: int, timeout: float = 60) -> dict:
    """The widget views render asynchronously after their outputs arrive: wait for all of them."""
    deadline = time.monotonic() + timeout
    while True:
        widgets = page.evaluate(WIDGETS, name)
        if (widgets["views"] >= expected and widgets["rendered"] == widgets["views"]) or time.monotonic() > deadline:
            return widgets
        time.sleep(0.5)


def _move_slider(page, name: str) -> None:
    """In the first explorer (controls above a figure), press → on a slider: the figure must change."""
    explorer = page.locator(".jp-OutputArea-output:has(.widget-output img)").first
    explorer.scroll_into_view_if_needed()
    figure = explorer.locator(".widget-output img").first
    slider = explorer.locator(".widget-slider", has_text=SLIDER_LABEL).first
    readout = slider.locator(".widget-readout")
    before_src, before_value = figure.get_attribute("src"), readout.inner_text()
    explorer.screenshot(path=ARTIFACTS / f"{Path(name).stem}-slider-before.png")
    slider.locator(".noUi-handle").focus()
    slider.locator(".noUi-handle").press("ArrowRight")
    page.wait_for_function("""(before) => {
        const explorer = document.querySelectorAll('.jp-OutputArea-output .widget-output img')[0];
        return explorer && explorer.complete && explorer.naturalWidth > 0 && explorer.src !== before;
    }""", arg=before_src, timeout=60_000, polling=250)
    after_value = readout.inner_text()
    explorer.screenshot(path=ARTIFACTS / f"{Path(name).stem}-slider-after.png")
    assert after_value != before_value, f"{name}: the '{SLIDER_LABEL}' slider did not move ({before_value})"
    assert figure.get_attribute("src") != before_src, f"{name}: moving the slider did not change the figure"


@pytest.mark.parametrize("name", NOTEBOOKS, ids=lambda n: Path(n).stem)
def test_notebook_runs_in_jupyterlab(name, browser, lab):  # browser first: skip before a server starts
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    console = []
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    page.on("console", lambda msg: console.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
    started = time.monotonic()
    try:
        state = _run_all(page, name, lab)
        errors = "\n\n".join(f"cell {e['cell']}: {e['ename']}: {e['evalue']}\n{ANSI.sub('', e['traceback'])}"
                             for e in state["errors"])
        assert not state["errors"], f"{name}: error outputs in the browser:\n{errors}"
        assert state["executed"] == state["code_cells"], f"{name}: not every code cell ran: {state}"

        widgets = _wait_widgets(page, name, state["widget_outputs"])
        assert state["widget_outputs"] > 0, f"{name}: no widget outputs (every notebook has at least a quiz)"
        assert widgets["views"] == state["widget_outputs"], f"{name}: widget outputs missing in the page: {widgets}"
        assert widgets["rendered"] == widgets["views"], (
            f"{name}: {widgets['views'] - widgets['rendered']} of {widgets['views']} widgets not rendered by "
            "the ipywidgets front end (is jupyterlab_widgets installed where JupyterLab runs?)")
        assert not widgets["error_mime"], f"{name}: error outputs rendered in the page"
        fallbacks = [t[:200] for t in widgets["texts"] if FALLBACK.search(t)]
        assert not fallbacks, f"{name}: widgets shown as text instead of rendered: {fallbacks}"
        if widgets["sliders"]:  # an explorer: its figure is an image in the widget's output area
            assert widgets["figures"] > 0, f"{name}: sliders but no rendered figure in a widget: {widgets}"

        first = page.locator(".jp-OutputArea-output:has(.widget-output img), "
                             ".jp-OutputArea-output:has(.jupyter-widgets)").first
        first.scroll_into_view_if_needed()
        page.screenshot(path=ARTIFACTS / f"{Path(name).stem}.png")
        if name == SLIDER_NOTEBOOK:
            _move_slider(page, name)
    except Exception:
        try:
            page.screenshot(path=ARTIFACTS / f"{Path(name).stem}-failed.png")
        except Exception as error:  # the page itself may be what failed
            print(f"{name}: no screenshot: {error}")
        if console:
            print(f"{name}: browser console errors:\n" + "\n".join(console[-20:]))
        raise
    finally:
        print(f"{name}: {time.monotonic() - started:.1f} s in the browser")
        page.close()
        try:
            lab.shutdown_kernels()  # one kernel at a time on a 2-core machine
        except OSError as error:  # the server is gone: the lab fixture's teardown reports it
            print(f"{name}: could not shut the kernels down: {error}")


def _record_external(context) -> list[str]:
    """Abort, and list, every request that would leave the machine (anything but file:, data:, about: and
    127.0.0.1; MathJax probes web fonts with about:blank)."""
    external = []

    def route(r):
        url = r.request.url
        if url.startswith(("file:", "data:", "blob:", "about:", "http://127.0.0.1", "ws://127.0.0.1")):
            return r.continue_()
        external.append(url)
        return r.abort()

    context.route("**/*", route)
    return external


def test_no_news_prompt_and_nothing_fetched(browser, lab):
    """The course environment (make install: jupyter-config/) turns JupyterLab's news and update checks off:
    no "Would you like to get notified about official Jupyter news?" toast, no request off the machine."""
    schema = lab.api("/lab/api/settings/@jupyterlab/apputils-extension:notification")["schema"]["properties"]
    assert schema["fetchNews"]["default"] == "false" and schema["checkForUpdates"]["default"] is False, (
        f"{sys.prefix}/share/jupyter/lab/settings/overrides.json should turn news off: run make install")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    external = _record_external(context)
    page = context.new_page()
    try:
        page.goto(f"{lab.url}/lab/tree/{NOTEBOOKS[0]}?reset&token={lab.token}", wait_until="domcontentloaded")
        page.wait_for_function(KERNEL_IDLE, arg=NOTEBOOKS[0], timeout=120_000, polling=250)
        config = json.loads(page.locator("#jupyter-config-data").text_content())
        assert config["news"]["disabled"], "the server has a news feed URL: jupyter-config/jupyter_server_config.json"
        page.wait_for_timeout(3000)  # the prompt would appear right after the application is restored
        toasts = page.locator(".Toastify__toast").all_inner_texts()
        page.screenshot(path=ARTIFACTS / "news-prompt.png")
        assert not [t for t in toasts if "news" in t.lower()], f"JupyterLab asks about news: {toasts}"
        assert external == [], f"JupyterLab made requests off the machine: {external}"
        # the checkers' marks are drawn with a glyph of the fonts this browser has, not the missing-glyph box
        from mamlkit.course.feedback import FAIL, PASS

        boxes = page.evaluate(TOFU, [PASS, FAIL])
        assert boxes == [False, False], f"{PASS} {FAIL} drawn as missing-glyph boxes in the output font: {boxes}"
    finally:
        context.close()
        lab.shutdown_kernels()


# true for each character the page's output (code) font draws exactly as a character no font has (U+E000 in
# the private use area, shown as the missing-glyph box): such a character is illegible here
TOFU = """(chars) => {
  const font = '32px ' + getComputedStyle(document.body).getPropertyValue('--jp-code-font-family');
  const draw = (ch) => {
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = 48;
    const ctx = canvas.getContext('2d');
    ctx.font = font;
    ctx.fillText(ch, 4, 36);
    return Array.from(ctx.getImageData(0, 0, 48, 48).data).join(',');
  };
  const box = draw('\\uE000');
  return chars.map(ch => draw(ch) === box);
}"""
SLIDE_DECK = "03_outer_update"  # the deck with the most maths
CURRENT = ("Array.from(document.querySelectorAll('.reveal .slides > section'))"
           ".findIndex(s => s.classList.contains('present'))")
STILL_TEX = r"""(root) => {  // TeX left as text in the prose (MathJax keeps its sources in <script> tags)
  const walker = document.createTreeWalker(document.querySelector(root), NodeFilter.SHOW_TEXT);
  const raw = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.parentElement.closest('script, style, pre, code, .jp-CodeCell, .cell_input')) continue;
    if (/\$[^$\s][^$]*\$|\\\(|\\\[|\\frac|\\theta/.test(node.textContent)) raw.push(node.textContent.slice(0, 80));
  }
  return raw;
}"""


def _slides_module():
    spec = importlib.util.spec_from_file_location("course_slides", ROOT / "course-src" / "slides.py")
    slides = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(slides)
    return slides


@pytest.fixture(scope="module")
def slide_deck(tmp_path_factory):
    """One deck exported as ``make slides`` does (course-src/slides.py), in a temporary folder."""
    out = tmp_path_factory.mktemp("slides")
    [deck] = _slides_module().export([ROOT / "notebooks" / f"{SLIDE_DECK}.ipynb"], out)
    return deck


def _typeset(page) -> dict:
    """Wait until MathJax 2 has typeset the page; count its output, the TeX sources it read, its errors."""
    page.wait_for_function("""() => new Promise(done => window.MathJax && MathJax.Hub
                              ? MathJax.Hub.Queue(() => done(true)) : done(false))""", timeout=60_000)
    return page.evaluate("""() => ({
        maths: document.querySelectorAll('.MathJax, .MathJax_Display, .MathJax_CHTML').length,
        sources: document.querySelectorAll('script[type^="math/tex"]').length,
        errors: document.querySelectorAll('.MathJax_Error, merror').length,
    })""")


def test_slides_work_offline(browser, slide_deck):
    """The exported deck, opened from the file system with the network off: reveal.js initialised (slides,
    controls, slide numbers), the maths typeset by MathJax, no raw TeX left, no request off the machine."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_offline(True)
    external = _record_external(context)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(slide_deck.as_uri(), wait_until="load")
        page.wait_for_function("document.querySelector('.reveal.ready') !== null", timeout=30_000, polling=250)
        state = _typeset(page) | page.evaluate("""() => ({
            slides: document.querySelectorAll('.reveal .slides > section').length,
            present: document.querySelectorAll('.reveal .slides > section.present').length,
            controls: !!document.querySelector('.reveal .controls'),
            number: (document.querySelector('.reveal .slide-number') || {}).textContent || '',
        })""")
        page.screenshot(path=ARTIFACTS / f"{SLIDE_DECK}-slides-offline.png")
        page.keyboard.press("ArrowRight")  # the deck responds: the next slide is shown
        page.wait_for_function(f"{CURRENT} === 1", timeout=10_000, polling=100)
        assert state["slides"] > 5 and state["present"] == 1 and state["controls"], f"reveal.js did not start: {state}"
        assert state["number"].strip(), f"no slide number: reveal.js not initialised: {state}"
        assert state["sources"] > 10 and state["maths"] >= state["sources"], f"maths not typeset: {state}"
        assert not state["errors"], f"MathJax errors in the deck: {state}"
        assert page.evaluate(STILL_TEX, ".reveal .slides") == [], "raw TeX left on the slides"
        assert external == [], f"the deck asked the network for: {external}"
        assert not errors, f"JavaScript errors in the deck: {errors}"
    finally:
        context.close()


@pytest.fixture(scope="module")
def site_page(tmp_path_factory):
    """One page of the static site built as ``make site`` builds it (site/_config.yml, MathJax copied to
    _mathjax/), from one notebook, not executed (the site build runs every notebook in full: minutes)."""
    try:
        import jupyter_book  # noqa: F401
        import yaml
    except ImportError:
        _unavailable("jupyter-book is not installed: pip install -e '.[test]'")
    book = tmp_path_factory.mktemp("site")
    config = yaml.safe_load((ROOT / "site" / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    (book / "_config.yml").write_text(yaml.safe_dump(config))
    (book / "_toc.yml").write_text(f"format: jb-book\nroot: intro\nchapters:\n  - file: notebooks/{SLIDE_DECK}\n")
    shutil.copy2(ROOT / "site" / "intro.md", book / "intro.md")
    (book / "notebooks").mkdir()
    shutil.copy2(ROOT / "notebooks" / f"{SLIDE_DECK}.ipynb", book / "notebooks")
    shutil.copytree(_slides_module().mathjax_dir(), book / "_mathjax" / "mathjax")
    build = subprocess.run([sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(book)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, f"jupyter-book build failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
    return book / "_build" / "html" / "notebooks" / f"{SLIDE_DECK}.html"


def test_site_page_works_offline(browser, site_page):
    """A page of the site, opened from the file system with the network off: its maths typeset by the local
    MathJax, no raw TeX, no request off the machine."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_offline(True)
    external = _record_external(context)
    page = context.new_page()
    try:
        page.goto(site_page.as_uri(), wait_until="load")
        state = _typeset(page)
        page.screenshot(path=ARTIFACTS / f"{SLIDE_DECK}-site-offline.png")
        assert state["sources"] > 10 and state["maths"] >= state["sources"], f"maths not typeset: {state}"
        assert not state["errors"], f"MathJax errors on the page: {state}"
        assert page.evaluate(STILL_TEX, "main") == [], "raw TeX left on the page"
        assert external == [], f"the page asked the network for: {external}"
    finally:
        context.close()


LIVE_RUN_CELLS = ["""import torch
from mamlkit import evaluation, tasks
from mamlkit.config import Config
from mamlkit.course import widgets
from mamlkit.models import MLP
torch.manual_seed(0)""",
                  """widgets.LiveRun(Config(algo="maml", iterations=300, val_every=100, val_tasks=10), MLP(),
                tasks.sine_test_tasks(50), evaluation.Protocol.sgd(inner_lr=0.01, inner_steps=2))"""]


def test_live_run_button_trains_in_the_browser(browser, lab):
    """Notebook 04's "train it now" button (``widgets.LiveRun``), clicked in JupyterLab on a short run: tqdm's
    progress bar renders as a widget inside it, and the result line with the paired difference appears."""
    import nbformat

    name = "live_run.ipynb"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in LIVE_RUN_CELLS])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, lab.root / name)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        state = _run_all(page, name, lab)
        assert not state["errors"] and state["executed"] == state["code_cells"], state
        button = page.locator(".jupyter-widgets button", has_text="train 300 iterations now")
        button.wait_for(timeout=60_000)
        button.click()
        done = page.locator(".jupyter-widgets", has_text=re.compile(r"300 iterations in \d+ s\. Query MSE"))
        done.first.wait_for(timeout=120_000)
        text = done.last.inner_text()
        assert re.search(r"new − loaded, paired: [+-]\d\.\d{3} ± \d\.\d{3}", text), text
        assert page.locator(".widget-output .widget-hprogress .progress-bar").count() > 0, (
            "tqdm's progress bar did not render as a widget in the button's output")
        page.screenshot(path=ARTIFACTS / "live_run.png")
    finally:
        page.close()
        lab.shutdown_kernels()
