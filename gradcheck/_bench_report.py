# SPDX-License-Identifier: MIT
"""The side-by-side benchmark's report: ``bench.html`` and ``bench.json``.

``benchmarks/peers.py`` times gradcheck and other gradient checkers on
the same networks and hands this module a summary dict; the page is
written beside the campaign's ``index.html`` (``reports/`` by default),
self-contained like it, and atomically, with the same helpers. The
formatting helpers here also lay out the table the benchmark prints, so
that the console and the page show the same figures.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import jinja2

from gradcheck._report import (
    check_summary,
    format_duration,
    format_started,
    page_environment,
    write_page,
)

__all__ = [
    "HTML_NAME",
    "JSON_NAME",
    "add_ratios",
    "format_ratio",
    "format_seconds",
    "format_table",
    "render_bench_html",
    "write_bench_report",
]

logger = logging.getLogger(__name__)

HTML_NAME = "bench.html"
JSON_NAME = "bench.json"

# The two gradcheck rows every other row is compared with.
FULL = "gradcheck"
SCREEN = "gradcheck-screen"
FORWARD = "forward"

_REQUIRED_KEYS = ("title", "sizes", "settings")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def format_seconds(value: object) -> str:
    """Format a time to three significant digits: ``512 µs``, ``3.27 ms``, ``41 s``."""
    x = _number(value)
    if x is None:
        return "\u2013"
    if x < 1e-3:
        return f"{1e6 * x:.3g} \u00b5s"
    if x < 1:
        return f"{1e3 * x:.3g} ms"
    if x < 100:
        return f"{x:.3g} s"
    return format_duration(x)


def format_ratio(value: object) -> str:
    """Format a ratio of times: ``0.0123x``, ``2.5x``, ``1,250x``."""
    x = _number(value)
    if x is None:
        return "\u2013"
    if x >= 1000:
        return f"{x:,.0f}\u00d7"
    return f"{x:.3g}\u00d7"


def _yes_no(value: object) -> str:
    if value is None:
        return "\u2013"
    return "yes" if value else "NO"


def add_ratios(rows: Sequence[dict]) -> list[dict]:
    """Return the rows of one network size with their ratios filled in.

    Each row with a median gets ``forward_passes`` (its median over the
    numpy forward pass's), ``full_over`` (gradcheck's full check's median
    over its own) and ``screen_over`` (the same for the screening check);
    a ratio below 1 means gradcheck took less time. A ratio whose times
    are missing (a row skipped, or a checker not run) is ``None``.

    Args:
        rows: dicts with at least ``checker`` and ``median_s`` (seconds,
            or ``None`` for a skipped row).
    """
    medians = {row["checker"]: _number(row.get("median_s")) for row in rows}

    def over(numerator: float | None, denominator: float | None) -> float | None:
        if numerator is None or not denominator:
            return None
        return numerator / denominator

    out = []
    for row in rows:
        median = medians[row["checker"]]
        out.append(
            {
                **row,
                "forward_passes": over(median, medians.get(FORWARD)),
                "full_over": over(medians.get(FULL), median),
                "screen_over": over(medians.get(SCREEN), median),
            }
        )
    return out


def _table_cells(row: Mapping) -> list[str]:
    repeats = row.get("repeats")
    median = format_seconds(row.get("median_s"))
    if repeats:
        median += f" ({repeats})"
    return [
        str(row["checker"]),
        str(row.get("checks", "")),
        format_seconds(row.get("first_s")),
        median,
        format_ratio(row.get("forward_passes")).rstrip("\u00d7"),
        format_ratio(row.get("full_over")),
        format_ratio(row.get("screen_over")),
        _yes_no(row.get("right_passes")),
        _yes_no(row.get("planted_flagged")),
        str(row.get("note", "")),
    ]


TABLE_HEADER = [
    "checker",
    "checks",
    "first call",
    "median (n)",
    "forward passes",
    "gradcheck full ÷",
    "gradcheck screen ÷",
    "right passes",
    "planted flagged",
    "note",
]


def format_table(rows: Sequence[Mapping]) -> str:
    """Lay out rows (with their ratios) as a plain-text table, columns aligned.

    The last column, the note, is left unpadded so a long note does not
    widen every line.
    """
    lines = [TABLE_HEADER] + [_table_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(TABLE_HEADER))]
    text = []
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=True)]
        text.append("  ".join(cells[:-1] + [line[-1]]).rstrip())
    text.insert(1, "  ".join("-" * w for w in widths[:-1]) + "  ----")
    return "\n".join(text)


@functools.cache
def _environment() -> jinja2.Environment:
    return page_environment(
        {
            "seconds": format_seconds,
            "ratio": format_ratio,
            "yes_no": _yes_no,
            "duration": format_duration,
            "started": format_started,
        }
    )


def _check_summary(summary: object) -> dict:
    return check_summary(
        summary, _REQUIRED_KEYS, "summary", "benchmarks/peers.py builds a complete one"
    )


def render_bench_html(summary: dict) -> str:
    """Render a benchmark summary as one self-contained HTML page."""
    summary = _check_summary(summary)
    return _environment().get_template("bench.html.j2").render(c=summary)


def write_bench_report(
    summary: dict, directory: str | os.PathLike
) -> tuple[Path, Path]:
    """Write ``bench.html`` and ``bench.json`` into ``directory``, atomically.

    Returns:
        The paths of the two files.

    Raises:
        InvalidTypeError: ``summary`` is not a dict.
        InvalidArgumentError: it lacks ``title``, ``sizes`` or ``settings``.
        OSError: the directory cannot be created or written.
    """
    summary = _check_summary(summary)
    return write_page(
        directory, (HTML_NAME, render_bench_html(summary)), (JSON_NAME, summary)
    )
