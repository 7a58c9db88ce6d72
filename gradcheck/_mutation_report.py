# SPDX-License-Identifier: MIT
"""The mutation report: ``mutants.html`` and ``mutants.json``.

Written beside the campaign's ``index.html`` (``reports/`` by default),
self-contained like it, and atomically, with the same helpers.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import jinja2

from gradcheck._report import (
    check_summary,
    format_duration,
    format_sci,
    format_started,
    page_environment,
    write_page,
)

__all__ = ["HTML_NAME", "JSON_NAME", "render_mutation_html", "write_mutation_report"]

logger = logging.getLogger(__name__)

HTML_NAME = "mutants.html"
JSON_NAME = "mutants.json"

_REQUIRED_KEYS = ("title", "mutants", "outcomes", "right", "totals", "passed")


def _percent(value: object) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "\u2013"
    # One decimal, so that 1447 of 1454 does not read as 100%.
    return "100%" if value == 1 else f"{100.0 * value:.1f}%"


def _examples(value: object, budget: int) -> str:
    if value is None:
        return f">{budget}"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.1f}"
    return str(int(value))


@functools.cache
def _environment() -> jinja2.Environment:
    return page_environment(
        {
            "sci": format_sci,
            "duration": format_duration,
            "started": format_started,
            "percent": _percent,
            "examples": _examples,
        }
    )


def _check_summary(summary: object) -> dict:
    return check_summary(
        summary, _REQUIRED_KEYS, "summary", "summarise_mutations builds a complete one"
    )


def render_mutation_html(summary: dict) -> str:
    """Render a mutation summary as one self-contained HTML page."""
    summary = _check_summary(summary)
    return _environment().get_template("mutants.html.j2").render(c=summary)


def write_mutation_report(
    summary: dict, directory: str | os.PathLike
) -> tuple[Path, Path]:
    """Write ``mutants.html`` and ``mutants.json`` into ``directory``, atomically.

    Returns:
        The paths of the two files.
    """
    summary = _check_summary(summary)
    return write_page(
        directory, (HTML_NAME, render_mutation_html(summary)), (JSON_NAME, summary)
    )
