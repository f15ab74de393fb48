"""The documentation pages against what they describe: the API's response keys, the links
between pages."""

from __future__ import annotations

import re

from tests.helpers import PROJECT_DIR
from vae_cats.serving.schemas import ReconstructResponse

DOCS = PROJECT_DIR / "docs"


def test_serving_page_names_every_reconstruct_key_and_no_other() -> None:
    (row,) = [
        line
        for line in (DOCS / "serving.md").read_text().splitlines()
        if line.startswith("| `POST /reconstruct` |")
    ]
    assert "JSON " in row, row
    # After "JSON", each key is followed by what it holds, in parentheses.
    named = set(re.findall(r"`(\w+)` \(", row.split("JSON ", 1)[1]))
    assert named == set(ReconstructResponse.model_fields), row


def test_index_links_every_page_under_where_to_go_next() -> None:
    text = (DOCS / "index.md").read_text()
    section = text.split("## Where to go next", 1)[1].split("\n## ", 1)[0]
    linked = set(re.findall(r"\]\((\w+\.md)\)", section))
    pages = {p.name for p in DOCS.glob("*.md")} - {"index.md"}
    assert linked == pages, sorted(pages - linked)
