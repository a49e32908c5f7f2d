"""The README and CONTRIBUTING.md live outside the docs site, so `mkdocs build --strict` does not check
their links: these tests do (every relative link resolves, every anchor exists). They also hold the
README's two commands to what CI runs, and keep private working notes out of the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (links and headings inside code are not links or headings)."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def _anchors(page: Path) -> set[str]:
    """Heading ids as the docs site (Python-Markdown's toc extension) makes them."""
    toc = pytest.importorskip("markdown.extensions.toc")
    ids = set()
    for line in _prose_lines(page.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if m:
            text = re.sub(r"`([^`]*)`", r"\1", m.group(2))
            ids.add(toc.slugify(text, "-"))
    return ids


def _broken_links(doc: Path) -> list[str]:
    broken = []
    for line in _prose_lines(doc.read_text(encoding="utf-8")):
        line = re.sub(r"`[^`]*`", "", line)  # inline code is not a link
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                broken.append(f"{target}: {dest} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{target}: no heading with id {anchor!r} in {dest.name}")
    return broken


@pytest.mark.parametrize("name", ["README.md", "CONTRIBUTING.md"])
def test_links_outside_the_site_resolve(name):
    assert _broken_links(REPO / name) == []


def test_link_checker_catches_a_broken_link_and_anchor(tmp_path):
    (tmp_path / "a.md").write_text("# Title here\n\n## Second part\n", encoding="utf-8")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "[ok](a.md) [ok](a.md#second-part) [bad](missing.md) [bad](a.md#nope)\n"
        "```\n[in code](not-a-link.md)\n```\nas code: `[x](nor-this.md)`\n",
        encoding="utf-8",
    )
    broken = _broken_links(doc)
    assert len(broken) == 2
    assert "missing.md" in broken[0] and "'nope'" in broken[1]


def test_readme_commands_are_the_ones_ci_and_the_demo_run():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"^(bash scripts/\S+)", readme, flags=re.MULTILINE)
    assert commands[:2] == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert "bash scripts/test.sh" in (REPO / ".ci" / "run").read_text(encoding="utf-8")
    for script in ("demo.sh", "test.sh", "docs.sh"):
        assert (REPO / "scripts" / script).is_file()
    assert "scripts/docs.sh" in (REPO / "scripts" / "test.sh").read_text(encoding="utf-8")


def test_every_docs_page_is_in_the_site_nav():
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(p.name for p in (REPO / "docs").glob("*.md"))
    assert pages
    assert [p for p in pages if f": {p}" not in nav] == []


def test_no_citation_of_private_working_notes():
    """Private working notes are never cited: the product and its docs explain everything in their own words."""
    try:
        files = subprocess.run(
            ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    needle = "DES" + "IGN"  # spelled apart so this file does not match itself
    hits = []
    for name in files:
        path = REPO / name
        if path.suffix not in {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt"} or not path.is_file():
            continue
        for no, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if needle in line:
                hits.append(f"{name}:{no}: {line.strip()}")
    assert hits == []
