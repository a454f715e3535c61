"""A headless Chromium/Chrome found on the machine: render a page, read its DOM, screenshot it.

Used for the static PNG export when matplotlib is missing, and by the tests that check the
report renders in a real browser. Console errors cannot be told from console.log in Chromium's
stderr log (all are INFO), so the page is loaded with a small script that records
`console.error`, uncaught errors and rejected promises into a hidden element read from the DOM.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from flexopt.errors import FlexoptError

BROWSER_ENV = "FLEXOPT_BROWSER"
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# Headless in a container: no sandbox (root), no GPU, and nothing that reaches the network.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--enable-logging=stderr", "--v=0")
ERRORS_ID = "flexopt-console-errors"
_CAPTURE = f"""<script>(function(){{
var errs=[];function keep(m){{errs.push(String(m));var e=document.getElementById("{ERRORS_ID}");
if(e)e.textContent=JSON.stringify(errs);}}
var orig=console.error;console.error=function(){{keep(Array.prototype.join.call(arguments," "));
orig.apply(console,arguments);}};
window.addEventListener("error",function(e){{keep("uncaught: "+(e.message||e));}});
window.addEventListener("unhandledrejection",function(e){{keep("rejected: "+e.reason);}});
document.addEventListener("DOMContentLoaded",function(){{var p=document.createElement("pre");
p.id="{ERRORS_ID}";p.hidden=true;p.textContent=JSON.stringify(errs);document.body.appendChild(p);
}});}})();</script>"""
_CONSOLE = re.compile(r':CONSOLE[^\]]*\] "(.*)", source: ')


def find_browser() -> str | None:
    """`$FLEXOPT_BROWSER`, else the first Chromium/Chrome on PATH."""
    env = os.environ.get(BROWSER_ENV)
    if env:
        return shutil.which(env) or (env if Path(env).is_file() else None)
    return next((p for p in map(shutil.which, BROWSER_NAMES) if p), None)


@dataclass(frozen=True)
class PageResult:
    """What the browser saw: the DOM after scripts ran, errors, and all console lines."""

    dom: str
    errors: list[str]
    console: list[str]


def _run(browser: str, page: Path, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="flexopt-chrome-") as profile:
        cmd = [browser, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000",
               *args, page.resolve().as_uri()]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise FlexoptError(
                f"{browser} did not finish rendering {page} in {timeout:g} s"
            ) from None


def _with_capture(page: Path, tmp: Path) -> Path:
    text = page.read_text(encoding="utf-8")
    i = text.find("<head>")
    pos = i + len("<head>") if i >= 0 else 0
    out = tmp / page.name
    out.write_text(text[:pos] + _CAPTURE + text[pos:], encoding="utf-8")
    return out


def render(page: str | os.PathLike[str], browser: str | None = None,
           timeout: float = 120) -> PageResult:
    """Load `page` headless, run its scripts, return the DOM and the page's console errors."""
    browser = browser or _require_browser()
    with tempfile.TemporaryDirectory(prefix="flexopt-page-") as tmp:
        copy = _with_capture(Path(page), Path(tmp))
        proc = _run(browser, copy, ["--dump-dom"], timeout)
    if proc.returncode != 0 or not proc.stdout:
        raise FlexoptError(f"{browser} failed to render {page}: {proc.stderr.strip()[-500:]}")
    console = _CONSOLE.findall(proc.stderr)
    m = re.search(rf'<pre id="{ERRORS_ID}"[^>]*>(.*?)</pre>', proc.stdout, re.S)
    errors = json.loads(html.unescape(m.group(1))) if m else ["error capture did not run"]
    errors += [c for c in console if c.startswith("Uncaught") and not any(c in e for e in errors)]
    return PageResult(proc.stdout, errors, console)


def screenshot(page: str | os.PathLike[str], png: str | os.PathLike[str],
               size: tuple[int, int] = (1280, 2400), browser: str | None = None,
               timeout: float = 120) -> Path:
    """Save a PNG of `page` rendered in a `size` (width, height) window."""
    browser = browser or _require_browser()
    out = Path(png).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = _run(browser, Path(page), [f"--screenshot={out}", f"--window-size={size[0]},{size[1]}"],
                timeout)
    if proc.returncode != 0 or not out.is_file():
        raise FlexoptError(f"{browser} failed to screenshot {page}: {proc.stderr.strip()[-500:]}")
    return out


def _require_browser() -> str:
    found = find_browser()
    if found is None:
        raise FlexoptError(
            f"no Chromium or Chrome found (looked for {', '.join(BROWSER_NAMES)} on PATH and "
            f"${BROWSER_ENV}); install one, e.g. `apt-get install chromium`"
        )
    return found
