"""The Dockerfile copies only what the build context lets in.

There is no Docker engine in CI, so this static check stands in for ``docker build`` on the
one thing that breaks most often: ``.dockerignore`` is an allow-list, and a file the
Dockerfile copies but the list does not allow (``setup.py``, ``build_support/`` when the
compiled build came) makes the build fail with "not found".
"""

from __future__ import annotations

import re

from tests.conftest import ROOT


def _allowed() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line[1:].rstrip("/") for line in lines if line.startswith("!")]


def _copied() -> list[str]:
    sources = []
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
            continue
        sources += [w.rstrip("/") for w in words[1:-1] if not w.startswith("--")]
    return sources


def test_every_copied_path_is_in_the_build_context() -> None:
    allowed = _allowed()
    copied = _copied()
    assert {"pyproject.toml", "setup.py", "build_support", "adapter", "mappings"} <= set(copied)
    missing = [
        source
        for source in copied
        if not any(source == a or source.startswith(a + "/") for a in allowed)
    ]
    assert not missing, f"COPY sources that .dockerignore keeps out: {missing}"


def test_every_copied_path_exists() -> None:
    for source in _copied():
        assert (ROOT / source).exists(), source
        assert not re.search(r"[*?]", source), f"{source}: copy named paths, not globs"
