"""The README and docs/ as a reader meets them: every relative link resolves (the file, and the
heading where a link names one), and the README's first screen stays a first screen."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FIRST_SCREEN_LINES = 100


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in page.read_text().splitlines()
            if line.startswith("#")}


def broken_links(page: Path) -> list[str]:
    bad = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target):  # http(s):, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            bad.append(f"{page.name}: {target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            bad.append(f"{page.name}: {target} (no such heading)")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_the_link_check_finds_a_broken_one(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# A heading\n")
    page.write_text("[ok](there.md) [ok](there.md#a-heading) [web](https://x.org)\n"
                    "[gone](missing.md) [no heading](there.md#nowhere)\n")
    assert broken_links(page) == ["page.md: missing.md (no such file)",
                                  "page.md: there.md#nowhere (no such heading)"]


def test_the_readme_is_a_first_screen_that_links_every_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) < FIRST_SCREEN_LINES
    linked = {Path(t).name for t in LINK.findall(readme) if t.startswith("docs/")}
    assert linked == {p.name for p in (REPO / "docs").glob("*.md")}
    assert "--model hinet-out/demo/hinet-demo-denoise.onnx" in readme  # what the demo wrote
