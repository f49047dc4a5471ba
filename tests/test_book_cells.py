"""Chapters are prose, one package call per result and figures: no chapter code cell is
package code (the design says about 20 lines; 25 is the hard limit)."""
from pathlib import Path

import jupytext
import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
MAX_LINES = 25


def _longest_code_cell(md: Path) -> tuple[int, int]:
    """(lines, index) of the chapter's longest code cell."""
    cells = jupytext.read(md).cells
    return max((len(c.source.splitlines()), i) for i, c in enumerate(cells) if c.cell_type == "code")


def test_the_count_sees_a_long_cell(tmp_path):
    md = tmp_path / "99_long.md"
    body = "\n".join(f"x{i} = {i}" for i in range(MAX_LINES + 1))
    md.write_text(f"# A chapter\n\n```{{code-cell}} ipython3\nx = 0\n```\n\n```{{code-cell}} ipython3\n{body}\n```\n")
    assert _longest_code_cell(md) == (MAX_LINES + 1, 2)


@pytest.mark.parametrize("md", sorted(BOOK.glob("[0-9][0-9]_*.md")), ids=lambda p: p.stem)
def test_no_chapter_code_cell_is_longer_than_25_lines(md):
    lines, index = _longest_code_cell(md)
    assert lines <= MAX_LINES, (f"{md.name}: cell {index} has {lines} lines (at most {MAX_LINES}): "
                                "its plotting or table code belongs in the package (analysis.plots)")
