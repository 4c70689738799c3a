"""The quickstart notebook in a real browser: JupyterLab on localhost, headless Chromium;
the explorer's picture answers the pointer with the words for the element under it.

Needs Debian's ``chromium`` (/usr/bin/chromium) and the ``playwright`` Python package
(never a downloaded browser); skipped, with the reason, when either is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "01_quickstart.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "artifacts" / "browser" / "quickstart.png"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
QKV_LABEL = "ERROR · layer 0 · self_attn.qkv_proj.weight (qkv)"
HOVERED = ("vLLM holds", 2, 1, 0)  # vLLM tp0's row 1, col 0 of o_proj: a wrong element

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"JupyterLab exited early ({proc.returncode}):\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer {url} within {timeout} s")


def _expected_words() -> tuple[list, str]:
    """The same explorer built here: the picture's panel boxes and the words for HOVERED."""
    from syncviz import Parallel
    from syncviz.widgets import Explorer

    ex = Explorer("llama3-8b", Parallel(tp=2), Parallel(tp=4))
    ex.image.hover = list(HOVERED)
    return ex.image.panels, ex.image.words


def test_quickstart_runs_in_jupyterlab(tmp_path):
    """Run All Cells shows the explorer on o_proj (the first WRONG parameter); hovering one
    cell of the picture shows the words the core gives for that element; a new parameter
    changes the image."""
    # CI installs both (.ci/run), so there a missing browser is a failure, not a skip.
    missing = pytest.fail if os.environ.get("CI") else pytest.skip
    if not CHROMIUM.exists():
        missing("no /usr/bin/chromium (apt-get install -y chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        missing("playwright missing (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 pip install playwright)")
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    port, token = _free_port(), os.urandom(16).hex()
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    log_path = tmp_path / "jupyter.log"
    log = log_path.open("w")
    lab = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}", "--LabApp.news_url=",
        ],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_server(f"{base}/api/status?token={token}", lab, timeout=60, log=log_path)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1100})
                url = f"{base}/lab/tree/{NOTEBOOK.name}?token={token}"
                _run_notebook_and_check(page, url, *_expected_words())
            except Exception:
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOT.with_name("quickstart-failed.png")))
                raise
            finally:
                browser.close()
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=15)
        except subprocess.TimeoutExpired:
            lab.kill()
            lab.wait()
        log.close()


def _run_notebook_and_check(page, url: str, panels: list, words: str) -> None:
    """Open the notebook, Run All Cells, hover a cell, change the parameter."""
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    _accept_kernel_dialog(page, timeout_ms=15_000)  # JupyterLab may ask which kernel to start
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    _accept_kernel_dialog(page, timeout_ms=3_000)
    explorer = page.locator(".syncviz-explorer")
    explorer.wait_for(timeout=90_000)
    image = explorer.locator(".syncviz-picture img").first
    image.wait_for(timeout=60_000)
    page.wait_for_function(
        "el => !!el.getAttribute('src') && el.naturalWidth > 0",
        arg=image.element_handle(),
        timeout=30_000,
    )
    assert "Error displaying widget" not in page.content()
    assert "Cannot show this combination" not in explorer.inner_text()
    assert "o_proj" in explorer.locator(".syncviz-status").inner_text()
    no_news = page.locator(".jp-toast-button", has_text="No")
    if no_news.count():
        no_news.first.click()
    page.evaluate("el => el.scrollIntoView({block: 'start'})", image.element_handle())
    page.wait_for_timeout(300)
    side, rank, i, j = HOVERED
    box = next(p for p in panels if (p["side"], p["rank"]) == (side, rank))
    x0, y0, x1, y1 = box["box"]
    nr, nc = box["cells"]
    natural = image.evaluate("el => [el.naturalWidth, el.naturalHeight]")
    shown = image.bounding_box()
    sx, sy = shown["width"] / natural[0], shown["height"] / natural[1]
    x = shown["x"] + (x0 + (j + 0.5) * (x1 - x0) / nc) * sx
    y = shown["y"] + (y0 + (i + 0.5) * (y1 - y0) / nr) * sy
    page.mouse.move(x - 3, y)
    page.mouse.move(x, y)
    tip = explorer.locator(".syncviz-hover")
    page.wait_for_function(
        "([el, want]) => el.textContent === want",
        arg=[tip.element_handle(), words],
        timeout=30_000,
    )
    assert "holds" in words and ", expected " in words and "came from trainer" in words
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    before = image.get_attribute("src")
    select = explorer.locator(".widget-dropdown", has_text="parameter").locator("select")
    select.select_option(label=QKV_LABEL)
    page.wait_for_function(
        "([el, old]) => el.getAttribute('src') !== old",
        arg=[image.element_handle(), before],
        timeout=60_000,
    )
    assert "qkv_proj" in explorer.locator(".syncviz-status").inner_text()


def _accept_kernel_dialog(page, timeout_ms: int) -> None:
    """Press "Select" in a "Select Kernel" dialog, if one shows within ``timeout_ms``."""
    accept = page.locator(".jp-Dialog .jp-mod-accept")
    try:
        accept.wait_for(timeout=timeout_ms)
    except Exception:  # no dialog: the kernel started by itself
        return
    accept.click()
