# SPDX-License-Identifier: MIT
"""The mutation report: ``mutants.html`` and ``mutants.json``.

Written beside the campaign's ``index.html`` (``reports/`` by default),
self-contained like it, and atomically, with the same helpers.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path

import jinja2

from gradcheck._report import (
    _strict,
    _write_atomically,
    format_duration,
    format_sci,
    format_started,
)
from gradcheck.errors import InvalidArgumentError, InvalidTypeError

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
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gradcheck", "templates"),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "html.j2"), default_for_string=True
        ),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["sci"] = format_sci
    env.filters["duration"] = format_duration
    env.filters["started"] = format_started
    env.filters["percent"] = _percent
    env.filters["examples"] = _examples
    return env


def _check_summary(summary: object) -> dict:
    if not isinstance(summary, dict):
        raise InvalidTypeError(
            f"summary must be a dict, got {type(summary)!r}",
            name="summary",
            value=summary,
        )
    missing = [key for key in _REQUIRED_KEYS if key not in summary]
    if missing:
        raise InvalidArgumentError(
            f"summary is missing the keys {missing}; summarise_mutations "
            "builds a complete one",
            name="summary",
            value=missing,
        )
    return summary


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
    html = render_mutation_html(summary)
    data = json.dumps(_strict(summary), indent=2, allow_nan=False, ensure_ascii=False)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    html_path, json_path = directory / HTML_NAME, directory / JSON_NAME
    _write_atomically(html_path, html)
    _write_atomically(json_path, data + "\n")
    logger.info("mutation report written to %s", html_path)
    return html_path, json_path
