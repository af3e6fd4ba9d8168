"""The one table renderer: every table asp shows a user, as aligned terminal text or GitHub Markdown.

Standard library only, so `asp check` (stdlib-only, bare CI runner) can use it as well as `asp bench`,
`asp sweep` and report.md. A table is a list of columns (a title and whether numbers in it are right
aligned) and rows of strings; the caller formats its own numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """One column: its header and alignment (numbers right, text left)."""

    title: str
    right: bool = False


def columns(*titles: str, right: Iterable[str] = ()) -> tuple[Column, ...]:
    """Columns from their titles; those named in `right` are right-aligned."""
    right = set(right)
    unknown = right - set(titles)
    if unknown:
        raise ValueError(f"right-aligned columns {sorted(unknown)} are not among {list(titles)}")
    return tuple(Column(t, t in right) for t in titles)


def _check(cols: Sequence[Column], rows: Sequence[Sequence[str]]) -> None:
    for row in rows:
        if len(row) != len(cols):
            raise ValueError(f"a row has {len(row)} cells for {len(cols)} columns: {list(row)}")


def to_text(cols: Sequence[Column], rows: Sequence[Sequence[str]], *, rule: bool = True) -> str:
    """Aligned plain text: header, a dashed rule under it, one line per row; columns two spaces apart.

    The last column is not padded, so long free text (a message) does not push trailing blanks.
    """
    _check(cols, rows)
    cells = [[c.title for c in cols]] + [list(r) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]

    def line(row: Sequence[str]) -> str:
        out = [
            cell.rjust(w) if col.right else cell.ljust(w)
            for cell, w, col in zip(row, widths, cols, strict=True)
        ]
        return "  ".join(out).rstrip()

    lines = [line(cells[0])]
    if rule:
        lines.append("  ".join("-" * w for w in widths))
    lines += [line(row) for row in cells[1:]]
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(cols: Sequence[Column], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (`|` inside a cell escaped; right-aligned columns `---:`)."""
    _check(cols, rows)
    lines = [
        "| " + " | ".join(_md_cell(c.title) for c in cols) + " |",
        "| " + " | ".join("---:" if c.right else "---" for c in cols) + " |",
    ]
    lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
