"""Markdown table rendering shared by the results and speed tables."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["markdown_table"]


def markdown_table(header: list[str], rows: Iterable[list[str]]) -> str:
    """A GitHub Markdown table: one header row, then ``rows`` (cells already formatted)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
