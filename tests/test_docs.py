"""The documentation site (mkdocs.yml, docs/) and the README that leads into it.

The site is built once per session with ``mkdocs build --strict`` (broken links, missing
anchors and unresolved API references fail it) into a temporary directory, then checked:
every page of the nav is there, the API reference holds rendered docstrings, and no page
needs the network to render (no external script, stylesheet or image; every local one
exists). When a ``chromium`` binary is installed, the home page is opened in headless
Chromium from the file system, as a reader would open it offline: its stylesheet must
apply and its links must lead to the built pages (``.ci/run`` installs Chromium; elsewhere
that test is skipped with a reason). Search needs the site served over HTTP.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

import robustrank
from headless import needs_chromium, probe_page

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "mkdocs.yml"
DOCS = ROOT / "docs"
README = ROOT / "README.md"

_MISSING = [
    name
    for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers")
    if importlib.util.find_spec(name) is None
]
needs_mkdocs = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"{', '.join(_MISSING)} not installed: pip install -e '.[docs]' (`make test` does)",
)


# --------------------------------------------------------------------------- helpers


class _ConfigLoader(yaml.SafeLoader):
    """mkdocs.yml without its ``!!python/...`` tags (the toc slugify function)."""


_ConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *_: None)


def _config() -> dict:
    return yaml.load(CONFIG.read_text(), Loader=_ConfigLoader)


def _nav_pages(nav) -> list[str]:
    """Every Markdown file named in the nav, in order."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    return []


def _html_name(page: str) -> str:
    # use_directory_urls: false, so docs/a/b.md is built as a/b.html
    return page[: -len(".md")] + ".html"


class _Page(HTMLParser):
    """The resources a page loads, its element ids and its text."""

    LOADS = {"script": "src", "img": "src", "iframe": "src", "source": "src", "embed": "src"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.resources: list[tuple[str, str]] = []
        self.ids: set[str] = set()
        self.text: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag in self.LOADS and a.get(self.LOADS[tag]):
            self.resources.append((tag, a[self.LOADS[tag]]))
        if tag == "link" and a.get("href"):
            rel = (a.get("rel") or "").lower().split()
            if {"stylesheet", "icon", "preload", "modulepreload", "manifest"} & set(rel):
                self.resources.append((f"link rel={' '.join(rel)}", a["href"]))
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)

    def plain_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _is_external(url: str) -> bool:
    return bool(urlsplit(url).scheme in ("http", "https") or url.startswith("//"))


def _first_sentence(obj) -> str:
    """A docstring's first line as the site renders it: no backticks, no Sphinx roles."""
    line = inspect.getdoc(obj).splitlines()[0]
    line = re.sub(  # as docs/_ext/griffe_robustrank.py renders a role: ~a.b.C shows C
        r":[a-z]+:`(~?)([^`]+)`", lambda m: m[2].rsplit(".", 1)[-1] if m[1] else m[2], line
    )
    return " ".join(line.replace("`", "").split())


# --------------------------------------------------------------------------- the build


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    cmd = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "--config-file",
        str(CONFIG),
        "--site-dir",
        str(out),
    ]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        log = "\n".join(done.stderr.splitlines()[-40:])
        pytest.fail(f"mkdocs build --strict failed (exit {done.returncode}):\n{log}")
    return out


@pytest.mark.slow
@needs_mkdocs
def test_every_page_of_the_nav_is_built(site):
    pages = _nav_pages(_config()["nav"])
    assert len(pages) >= 20 and len(set(pages)) == len(pages)
    for page in pages:
        assert (DOCS / page).is_file(), page
        built = site / _html_name(page)
        assert built.is_file(), f"{page} was not built"
        assert "<h1" in built.read_text(encoding="utf-8"), f"{page} has no title"
    for required in ("getting-started.md", "equations.md", "api/index.md", "results/index.md"):
        assert required in pages


@pytest.mark.slow
@needs_mkdocs
def test_api_reference_renders_the_docstrings(site):
    from robustrank import evaluation, metrics
    from robustrank.experiments import reproduce

    expected = {
        "api/metrics.html": (
            "robustrank.metrics",
            [metrics.effective_rank, metrics.effective_sparsity, metrics.structure_report],
        ),
        "api/evaluation.html": ("robustrank.evaluation", [evaluation.fooling_ratio]),
        "api/reproduce.html": ("robustrank.experiments.reproduce", [reproduce.reproduce]),
    }
    for name, (module, objects) in expected.items():
        page = _parse(site / name)
        text = page.plain_text()
        for obj in objects:
            ident = f"{module}.{obj.__name__}"  # documented under the module of the page
            assert ident in page.ids, f"{name} has no entry {ident}"
            assert _first_sentence(obj) in text, f"{name}: the docstring of {ident}"
        assert ":func:" not in text and ":class:" not in text, f"a Sphinx role leaked in {name}"
    # every module page of the nav renders the module it names
    api_pages = [p for p in _nav_pages(_config()["nav"]) if p.startswith("api/")]
    for page in api_pages:
        if page == "api/index.md":
            continue
        directive = (DOCS / page).read_text().split()[1]  # "::: robustrank.<module>"
        assert directive in _parse(site / _html_name(page)).ids, page


@pytest.mark.slow
@needs_mkdocs
def test_no_page_needs_the_network(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 20
    for path in pages:
        for tag, url in _parse(path).resources:
            assert not _is_external(url), f"{path.relative_to(site)}: <{tag}> loads {url}"
            if url.startswith("data:") or path.name == "404.html":
                continue  # the 404 page is for web servers and links from the site's root
            target = (path.parent / unquote(urlsplit(url).path)).resolve()
            assert target.is_file(), f"{path.relative_to(site)}: <{tag}> {url} is missing"
    for css in site.rglob("*.css"):
        for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", css.read_text(encoding="utf-8")):
            assert url.startswith("data:") or not _is_external(url), f"{css.name}: {url}"
    assert (site / "search" / "search_index.json").is_file()  # for the site served over HTTP


@pytest.mark.slow
@needs_mkdocs
def test_readme_links_into_the_site_resolve(site):
    links = re.findall(r"\]\((docs/[^)#\s]+\.md)(?:#([^)\s]+))?\)", README.read_text())
    assert len(links) >= 10
    for page, anchor in links:
        built = site / _html_name(page[len("docs/") :])
        if page.endswith("/README.md"):  # a folder's README is that folder's index page
            built = built.with_name("index.html")
        assert built.is_file(), page
        if anchor:
            assert anchor in _parse(built).ids, f"README links to {page}#{anchor}"


# --------------------------------------------------------------------------- the browser


_PROBE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const header = document.querySelector(".md-header");
  const links = [...document.querySelectorAll(".md-nav__link[href]")].map(a => a.href);
  document.body.setAttribute("data-probe", JSON.stringify({
    header: header ? getComputedStyle(header).position : null,
    links: links.filter(h => h.startsWith("file:")),
  }));
}, 2000));
</script>"""


@pytest.mark.slow
@needs_mkdocs
@needs_chromium
def test_home_page_renders_offline_in_headless_chromium(site, tmp_path):
    # A copy of the site with the home page plus a probe that records what rendered.
    copy = tmp_path / "site"
    shutil.copytree(site, copy)
    shutil.copy(copy / "index.html", copy / "probe.html")
    probe, dom = probe_page(copy / "probe.html", _PROBE, tmp_path / "profile")
    assert probe["header"] == "sticky", "the theme's stylesheet did not apply"
    pages = {unquote(urlsplit(h).path) for h in probe["links"]}
    assert len(pages) >= 20 and all(Path(p).is_file() for p in pages), pages
    assert "Where to read on" in dom and "The headline result" in dom


# --------------------------------------------------------------------------- without a build


def test_readme_starts_with_the_two_commands_and_stays_short():
    lines = README.read_text().splitlines()
    assert lines[:6] == [
        "# robustrank",
        "",
        "```bash",
        "make reproduce   # the main job: train every model of the paper, write "
        "results/quick/report.html",
        "make test        # the test suite",
        "```",
    ]
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the details belong in docs/"
    for target in re.findall(r"\]\(((?:docs/)[^)#\s]*)", "\n".join(lines)):
        assert (ROOT / target).exists(), f"README links to a missing {target}"
    assert "make docs" in "\n".join(lines) and "site/index.html" in "\n".join(lines)


def test_every_top_level_name_is_listed_in_the_api_overview():
    overview = (DOCS / "api" / "index.md").read_text()
    missing = [name for name in robustrank.__all__ if f"`{name}`" not in overview]
    assert not missing, f"add {missing} to docs/api/index.md (Names at the top level)"


def test_the_equation_page_covers_the_paper():
    text = (DOCS / "equations.md").read_text()
    for eq in range(1, 9):
        assert f"Eq. ({eq})" in text, f"Eq. ({eq}) is not mapped"
    for name in ("Theorem 1", "GNM", "KDE bounds", "Appendix B"):
        assert name in text, name
    # effective sparsity is Eq. 2 and effective rank Eq. 3, as in the paper
    assert re.search(r"Eq\. \(2\), effective sparsity", text)
    assert re.search(r"Eq\. \(3\), effective rank", text)
