"""Every ```python block of every docs/*.md page runs as written (CPU only).

A page's blocks run in order in one namespace, like a reader pasting them
into one session, inside a fresh temporary folder.
"""
import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(page):
    """[(line number, source)] of the page's ```python blocks."""
    text = page.read_text()
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in FENCE.finditer(text)]


def test_pages_exist():
    names = {p.name for p in PAGES}
    assert {"models.md", "surrogates.md", "learnable.md", "inspect.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(page)
    # every opening ```python fence is matched by a closing one (none silently skipped)
    assert len(blocks) == page.read_text().count("```python\n")
    namespace = {"__name__": f"docs_{page.stem}"}
    for line, src in blocks:
        exec(compile(src, f"{page.name}:{line}", "exec"), namespace)


def test_new_pages_have_examples():
    for name in ("models.md", "surrogates.md", "learnable.md", "inspect.md"):
        assert python_blocks(DOCS / name), f"{name} has no runnable example"
