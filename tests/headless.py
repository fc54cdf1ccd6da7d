"""Open a page in headless Chromium with a probe script and read what it recorded: the one
browser check shared by the report test and the documentation-site test
(``from headless import chromium, probe_page``)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

__all__ = ["chromium", "needs_chromium", "probe_page"]


def chromium() -> str | None:
    """The installed Chromium binary, if any."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


needs_chromium = pytest.mark.skipif(
    chromium() is None, reason="no chromium binary (apt-get install chromium)"
)


def probe_page(page: Path, probe: str, profile: Path) -> tuple[Any, str]:
    """Write ``page`` with the ``probe`` script before ``</body>`` (its ``data-probe``
    attribute on ``<body>`` holds JSON), render it headless; return that JSON and the
    rendered DOM."""
    text = page.read_text(encoding="utf-8")
    assert text.count("</body>") == 1
    page.write_text(text.replace("</body>", probe + "</body>"), encoding="utf-8")
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    start = dom.index('data-probe="') + len('data-probe="')
    return json.loads(dom[start : dom.index('"', start)].replace("&quot;", '"')), dom
