"""mkdocs hook: configuration.md names every file of every group under conf/.

Each group has a table row holding `` `group/` `` and each option as `` `option` ``.

A config group or experiment that the docs do not mention is a warning, so
``mkdocs build --strict`` (run by CI) fails until the page is brought up to date.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.plugins.conf_coverage")
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if page.file.src_uri != "configuration.md":
        return markdown
    lines = markdown.splitlines()
    for path in sorted(CONF_DIR.glob("*/*.yaml")):
        group, option = path.parent.name, path.stem
        rows = [line for line in lines if f"`{group}/`" in line]
        if not any(f"`{option}`" in row for row in rows):
            log.warning("configuration.md does not describe conf/%s/%s.yaml", group, option)
    return markdown
