# SPDX-License-Identifier: MIT
"""The discrepancy report: one self-contained HTML page and a results.json.

A campaign (see :mod:`gradcheck._campaign`) is a dict of check results,
grouped in sections, with counts, the largest discrepancy per quantity
kind, the environment and the settings. This module turns it into

* ``index.html``: a page that opens offline (inline CSS, the plot as inline
  SVG, no scripts, fonts or images from elsewhere), failures first;
* ``results.json``: a compact, strict-JSON summary for CI, with one line per
  check and no per-entry detail.

Both files are written atomically: to a temporary file in the target
directory, then moved over the old one with :func:`os.replace`, so a reader
never sees half a report.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from gradcheck._result import strict_json
from gradcheck.errors import InvalidArgumentError, InvalidTypeError

__all__ = ["write_report", "render_html", "results_json"]

logger = logging.getLogger(__name__)

HTML_NAME = "index.html"
JSON_NAME = "results.json"

# Most failing checks the plot labels by name; more would be unreadable.
MAX_PLOT_LABELS = 8

# Failing (and inconclusive) checks shown in full at the top of the page;
# the rest are listed in one line each, which keeps the page small when a
# wrong derivation fails every check.
MAX_FAILURE_CARDS = 20

_REQUIRED_KEYS = ("title", "counts", "sections")


def check_summary(
    summary: object, required: Iterable[str], what: str, builder: str
) -> dict:
    """Return ``summary`` if it is a dict with every ``required`` key.

    Args:
        summary: what a report is to be written from.
        required: the keys it needs.
        what: its name in messages (``"campaign"``, ``"summary"``).
        builder: what builds a complete one, for the message.

    Raises:
        InvalidTypeError: ``summary`` is not a dict.
        InvalidArgumentError: it lacks some of the keys.
    """
    if not isinstance(summary, Mapping):
        raise InvalidTypeError(
            f"{what} must be a dict, got {type(summary)!r}", name=what, value=summary
        )
    missing = [key for key in required if key not in summary]
    if missing:
        raise InvalidArgumentError(
            f"{what} is missing the keys {missing}; {builder}",
            name=what,
            value=missing,
        )
    return summary  # type: ignore[return-value]


def _check_campaign(campaign: object) -> Mapping[str, Any]:
    return check_summary(
        campaign,
        _REQUIRED_KEYS,
        "campaign",
        f"a campaign dict needs at least {list(_REQUIRED_KEYS)}",
    )


def _iter_checks(campaign: Mapping[str, Any]) -> Iterable[tuple[str, dict]]:
    for section in campaign["sections"]:
        for check in section.get("checks", ()):
            yield section.get("name", ""), check


def results_json(campaign: dict) -> dict:
    """Return the compact summary that ``results.json`` holds.

    Args:
        campaign: the campaign dict, as the campaign module produces it.

    Returns:
        A dict with the campaign's title, derivation, seed, count,
        interrupted flag, start time, duration, counts and largest
        discrepancies; ``checks``, one entry per check with its section,
        label, verdict, architecture, first wrong quantity, parameter count,
        batch size, numeric reference, Taylor order per quantity and step
        sweeps of the worst entries; and ``shrunk``, the smallest failing network's
        architecture, first wrong quantity and label, or ``None``. Non-finite
        floats are already the strings ``"nan"``, ``"inf"`` and ``"-inf"``,
        so the dict dumps as strict JSON.

    Raises:
        InvalidTypeError: ``campaign`` is not a dict.
        InvalidArgumentError: it lacks ``title``, ``counts`` or ``sections``.
    """
    campaign = _check_campaign(campaign)

    checks = [
        {
            "section": section,
            "label": check.get("label", ""),
            "verdict": check.get("verdict"),
            "architecture": check.get("architecture"),
            "first_wrong": check.get("first_wrong"),
            "n_params": check.get("n_params"),
            "batch": check.get("batch"),
            "numeric_reference": check.get("numeric_reference"),
            "taylor_orders": {
                t.get("quantity"): t.get("order_analytic")
                for t in check.get("taylor") or ()
            },
            "sweeps": [
                {
                    key: sweep.get(key)
                    for key in ("entry", "steps", "vs_autodiff", "vs_analytic", "band")
                }
                for sweep in check.get("sweeps") or ()
            ],
        }
        for section, check in _iter_checks(campaign)
    ]
    shrunk = campaign.get("shrunk")
    if shrunk is not None:
        check = shrunk.get("check", {})
        shrunk = {
            "architecture": check.get("architecture"),
            "first_wrong": check.get("first_wrong"),
            "label": check.get("label"),
        }
    return strict_json(
        {
            "title": campaign.get("title"),
            "derivation": campaign.get("derivation"),
            "seed": campaign.get("seed"),
            "count": campaign.get("count"),
            "interrupted": bool(campaign.get("interrupted", False)),
            "started": campaign.get("started"),
            "duration_s": campaign.get("duration_s"),
            "counts": campaign.get("counts"),
            "largest_discrepancies": campaign.get("largest_discrepancies", []),
            "checks": checks,
            "shrunk": shrunk,
        }
    )


# ---------------------------------------------------------------------------
# Formatting helpers for the template


def _as_float(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        # Values that went through strict_json once come back as strings.
        try:
            return float(value)
        except ValueError:
            return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _format_special(x: float) -> str | None:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "\u221e" if x > 0 else "\u2212\u221e"
    return None


def format_sci(value: object, digits: int = 2) -> str:
    """Format a discrepancy or ratio compactly: ``3.1e-17``, ``0.012``, ``0``."""
    x = _as_float(value)
    if x is None:
        return "\u2013" if value is None else str(value)
    special = _format_special(x)
    if special is not None:
        return special
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.{digits + 1}g}"
    mantissa, exponent = f"{x:.{digits}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def format_value(value: object) -> str:
    """Format an entry's value with enough digits to see where two differ."""
    x = _as_float(value)
    if x is None:
        return "\u2013" if value is None else str(value)
    special = _format_special(x)
    if special is not None:
        return special
    return f"{x:.10g}".replace("-", "\u2212")


def format_duration(value: object) -> str:
    """Format seconds as ``1.2 s``, ``1 min 33 s`` or ``2 h 05 min``."""
    x = _as_float(value)
    if x is None or not math.isfinite(x):
        return "\u2013"
    if x < 60:
        return f"{x:.1f} s"
    minutes, seconds = divmod(round(x), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_started(value: object) -> str:
    """Format an ISO timestamp as ``2026-12-03 17:00 UTC+00:00``; keep others."""
    if not isinstance(value, str):
        return "\u2013" if value is None else str(value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return value
    text = when.strftime("%Y-%m-%d %H:%M")
    if when.tzinfo is not None:
        offset = when.strftime("%z")
        zone = "UTC" if offset in ("+0000", "") else f"UTC{offset[:3]}:{offset[3:]}"
        text += f" {zone}"
    return text


def format_details(details: object) -> str:
    """Format a check's details as compact ``key=value`` pairs."""
    if not isinstance(details, Mapping):
        return ""
    parts = []
    for key, value in details.items():
        if key == "screen" and isinstance(value, Mapping):
            value = _format_screen(value)
        if isinstance(value, float):
            value = format_sci(value)
        parts.append(f"{key}={value}")
    return "  ".join(parts)


def _format_screen(screen: Mapping[str, Any]) -> str:
    """Summarise a screen: its directions, worst miss chances, what was drilled."""
    quantities = [
        q for q in (screen.get("quantities") or {}).values() if q.get("screened")
    ]
    worst = {}
    for q in quantities:
        for size, p in q["miss_probability"].items():
            worst[size] = max(worst.get(size, 0.0), p)
    chances = ", ".join(f"{format_sci(p)} at {size}" for size, p in worst.items())
    full = ", ".join(screen.get("checked_in_full") or ()) or "none"
    along = f"{screen.get('directions')} directions"
    if screen.get("adaptive"):
        # How many each quantity took, of the most it could have.
        taken = sorted({q["directions"] for q in quantities if "directions" in q})
        along = f"{' or '.join(map(str, taken)) or 'none'} of up to {along}"
    return (
        f"{along} (seed {screen.get('seed')}); "
        f"largest miss probability {chances}; checked in full: {full}"
    )


def _worst_band_ratio(check: Mapping[str, Any]) -> float | None:
    """Return the largest ``|analytic - autodiff| / band`` over the quantities.

    NaN anywhere wins, because it means the derivation produced no number.
    """
    ratios = [_as_float(q.get("max_band_ratio")) for q in check.get("quantities", ())]
    ratios = [r for r in ratios if r is not None]
    if not ratios:
        return None
    if any(math.isnan(r) for r in ratios):
        return math.nan
    return max(ratios)


def _entry_band_ratio(entry: Mapping[str, Any]) -> float | None:
    """Return an entry's ``|analytic - autodiff| / band``; ``None`` without a band."""
    diff = _as_float(entry.get("abs_discrepancy"))
    band = _as_float(entry.get("band"))
    if diff is None or not band:
        return None
    return diff / band


def _quantity_size(quantity: Mapping[str, Any]) -> int:
    return math.prod(int(n) for n in quantity.get("shape", ()))


def _is_over(value: object, limit: float = 1.0) -> bool:
    x = _as_float(value)
    return x is not None and (math.isnan(x) or x > limit)


# ---------------------------------------------------------------------------
# The plot


def _plot_points(
    campaign: Mapping[str, Any],
) -> tuple[list[tuple[int, float | None, str, str]], list[tuple[int, int, str]]]:
    """Return ``(x, ratio, verdict, label)`` per check and section spans."""
    points = []
    spans = []
    x = 0
    for section in campaign["sections"]:
        start = x
        for check in section.get("checks", ()):
            points.append(
                (
                    x,
                    _worst_band_ratio(check),
                    str(check.get("verdict", "")),
                    str(check.get("label", "")),
                )
            )
            x += 1
        if x > start:
            spans.append((start, x - 1, str(section.get("name", ""))))
    return points, spans


def render_plot_svg(campaign: Mapping[str, Any]) -> str:
    """Plot every check's largest band ratio on a log scale, as an SVG string.

    The y value of a check is the largest ``|analytic - autodiff| / band``
    over its quantities; 1 is the edge of the band. Zero ratios are drawn on
    a floor line below the data, infinite and NaN ones on a ceiling line
    above it, each labelled, so that no check drops out of the picture.

    Args:
        campaign: the campaign dict.

    Returns:
        The ``<svg>`` element, without an XML prolog, or ``""`` when there
        are no checks.
    """
    # Imported here: matplotlib is slow to import and only the report needs it.
    import matplotlib
    from matplotlib.figure import Figure

    points, spans = _plot_points(campaign)
    points = [p for p in points if p[1] is not None]
    if not points:
        return ""

    # Choose decades that hold every finite positive ratio and the band.
    finite = [r for _, r, _, _ in points if r is not None and 0 < r < math.inf]
    low = min([*finite, 1e-2])
    high = max([*finite, 1.0])
    floor_y = 10.0 ** (math.floor(math.log10(low)) - 1)
    ceiling_y = 10.0 ** (math.ceil(math.log10(high)) + 1)

    def clip(ratio: float) -> float:
        if math.isnan(ratio) or math.isinf(ratio):
            return ceiling_y
        return floor_y if ratio <= 0 else ratio

    colours = {
        "pass": "#4a7fb5",
        "inconclusive": "#c98a00",
        "fail": "#c62828",
        "not-differentiable": "#7b3fb0",
    }
    style = {
        "pass": {"marker": "o", "s": 14, "alpha": 0.75, "zorder": 3},
        "inconclusive": {"marker": "D", "s": 30, "alpha": 0.95, "zorder": 4},
        "fail": {"marker": "o", "s": 60, "alpha": 1.0, "zorder": 5},
        "not-differentiable": {"marker": "s", "s": 26, "alpha": 0.95, "zorder": 4},
    }
    names = {
        "pass": "pass",
        "inconclusive": "inconclusive",
        "fail": "fail",
        "not-differentiable": "not differentiable",
    }

    # svg.fonttype "none" keeps text as text (smaller, selectable) and a
    # fixed hash salt keeps element ids, and so the page, reproducible.
    with matplotlib.rc_context(
        {"svg.fonttype": "none", "svg.hashsalt": "gradcheck", "font.size": 9}
    ):
        fig = Figure(figsize=(10, 3.6), layout="constrained")
        ax = fig.add_subplot()
        n = len(points)
        ax.set_yscale("log")
        ax.set_xlim(-1, max(n, 2))
        ax.set_ylim(floor_y / 4, ceiling_y * 4)

        # Sections as alternating bands, named above the axes; a narrow
        # section is named from its right end, so the name stays in view.
        above = ax.get_xaxis_transform()
        for i, (start, stop, name) in enumerate(spans):
            if i % 2:
                ax.axvspan(start - 0.5, stop + 0.5, color="#f1f3f6", zorder=0)
            narrow = (stop - start + 1) < 0.25 * n
            ax.text(
                stop + 0.5 if narrow else start - 0.5,
                1.02,
                name,
                transform=above,
                ha="right" if narrow else "left",
                va="bottom",
                fontsize=8,
                color="#5f6b7a",
            )

        ax.axhspan(1.0, ceiling_y / 2, color="#fdecea", zorder=0)
        ax.axhline(1.0, color="#c62828", linewidth=1.0, zorder=2)
        ax.text(
            n - 0.5 if n > 1 else 1,
            1.15,
            "band edge (ratio 1)",
            color="#c62828",
            ha="right",
            va="bottom",
            fontsize=8,
        )

        ratios = [r for _, r, _, _ in points]
        if any(math.isnan(r) or math.isinf(r) for r in ratios):
            ax.axhline(ceiling_y, color="#9aa4b1", linewidth=0.8, linestyle=":")
            ax.text(
                -0.5, ceiling_y * 1.25, "\u221e or NaN", fontsize=8, color="#5f6b7a"
            )
        if any(r == 0 for r in ratios):
            ax.axhline(floor_y, color="#9aa4b1", linewidth=0.8, linestyle=":")
            ax.text(-0.5, floor_y * 1.25, "exactly 0", fontsize=8, color="#5f6b7a")

        for verdict in ("pass", "not-differentiable", "inconclusive", "fail"):
            chosen = [(x, clip(r)) for x, r, v, _ in points if v == verdict]
            if not chosen:
                continue
            xs, ys = zip(*chosen, strict=True)
            ax.scatter(
                xs,
                ys,
                color=colours[verdict],
                edgecolors="#5a0d0d" if verdict == "fail" else "none",
                linewidths=0.8,
                label=f"{names[verdict]} ({len(chosen)})",
                **style[verdict],
            )

        failing = [(x, clip(r), label) for x, r, v, label in points if v == "fail"]
        for x, y, label in failing[:MAX_PLOT_LABELS]:
            ax.annotate(
                label,
                (x, y),
                xytext=(5, -3),
                textcoords="offset points",
                fontsize=8,
                color="#8e1b1b",
            )

        ax.set_xlabel("check, in report order")
        ax.set_ylabel("max |analytic \u2212 autodiff| / band")
        ax.grid(axis="y", which="major", color="#e3e7ec", linewidth=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        fig.legend(loc="outside lower right", fontsize=8, frameon=False, ncols=3)

        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})

    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    # The RDF metadata block names its vocabularies by URL; the page has no
    # use for it, and it should reference nothing outside itself.
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.DOTALL)
    return svg


# ---------------------------------------------------------------------------
# The step sweeps, drawn as small inline SVG

# Colours of the swept entries, in order; the text names each entry too.
SWEEP_COLOURS = ("#2f5d8a", "#c2571a", "#5b2a86", "#1e6b34")


def _log10_positive(values: Iterable[object]) -> list[float | None]:
    """Return log10 of each value, ``None`` for zero, negative or non-finite ones."""
    out: list[float | None] = []
    for v in values:
        f = _as_float(v)
        out.append(
            math.log10(f) if f is not None and f > 0 and math.isfinite(f) else None
        )
    return out


def render_sweep_svg(sweeps: object) -> str:
    """Draw the step sweeps of one check as an inline ``<svg>``, or ``""``.

    One colour per entry: a solid line for ``|numeric - autodiff|``, a
    dashed one for ``|numeric - analytic|``, and a dotted level for the
    entry's band, all against the relative step on log-log axes (the
    step falls to the right, as in the sweep). The drawing is a few
    hundred bytes of plain SVG per entry, so that a report with hundreds
    of checks stays small and needs no plotting library.
    """
    if not isinstance(sweeps, (list, tuple)) or not sweeps:
        return ""
    sweeps = [s for s in sweeps[: len(SWEEP_COLOURS)] if isinstance(s, Mapping)]
    lines = []
    for s in sweeps:
        steps = _log10_positive(s.get("steps", ()))
        for key, dash in (("vs_autodiff", ""), ("vs_analytic", "5 3")):
            lines.append((steps, _log10_positive(s.get(key, ())), dash))
    ys = [y for _, line, _ in lines for y in line if y is not None]
    ys += [y for y in _log10_positive(s.get("band") for s in sweeps) if y is not None]
    xs = [x for steps, _, _ in lines for x in steps if x is not None]
    if not ys or not xs:
        return ""
    y_low, y_high = math.floor(min(ys)), math.ceil(max(ys))
    if y_high == y_low:
        y_high += 1
    x_low, x_high = math.floor(min(xs)), math.ceil(max(xs))
    width, height, left, right, top = 560, 230, 58, 14, 10 + 14 * len(sweeps)
    bottom = 34
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:  # larger steps on the left
        return left + plot_w * (x_high - x) / (x_high - x_low)

    def py(y: float) -> float:
        return top + plot_h * (y_high - y) / (y_high - y_low)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" '
        'aria-label="error of the central difference against its step" '
        'font-family="system-ui, sans-serif" font-size="10">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" '
        'fill="#fff" stroke="#cfd6de"/>',
    ]
    for x in range(x_low, x_high + 1, 2):
        parts.append(
            f'<line x1="{px(x):.1f}" y1="{top}" x2="{px(x):.1f}" '
            f'y2="{top + plot_h}" stroke="#eef1f4"/>'
            f'<text x="{px(x):.1f}" y="{top + plot_h + 13}" text-anchor="middle" '
            f'fill="#5f6b7a">1e{x}</text>'
        )
    stride = max(1, math.ceil((y_high - y_low) / 6))
    for y in range(y_low, y_high + 1, stride):
        parts.append(
            f'<line x1="{left}" y1="{py(y):.1f}" x2="{left + plot_w}" '
            f'y2="{py(y):.1f}" stroke="#eef1f4"/>'
            f'<text x="{left - 4}" y="{py(y) + 3:.1f}" text-anchor="end" '
            f'fill="#5f6b7a">1e{y}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle" '
        'fill="#5f6b7a">relative step</text>'
    )
    for k, s in enumerate(sweeps):
        colour = SWEEP_COLOURS[k]
        for steps, line, dash in lines[2 * k : 2 * k + 2]:
            # Zero errors (exact agreement) sit on the bottom edge.
            points = [
                f"{px(x):.1f},{py(y_low if y is None else y):.1f}"
                for x, y in zip(steps, line, strict=False)
                if x is not None
            ]
            dashes = f' stroke-dasharray="{dash}"' if dash else ""
            parts.append(
                f'<polyline points="{" ".join(points)}" fill="none" '
                f'stroke="{colour}" stroke-width="1.5"{dashes}/>'
            )
        band = _log10_positive([s.get("band")])[0]
        if band is not None:
            parts.append(
                f'<line x1="{left}" y1="{py(band):.1f}" x2="{left + plot_w}" '
                f'y2="{py(band):.1f}" stroke="{colour}" stroke-dasharray="1 3"/>'
            )
        name = Markup.escape(str(s.get("entry", "")))
        parts.append(
            f'<text x="{left}" y="{10 + 14 * k}" fill="{colour}">&#9472; {name}: '
            "solid vs autodiff, dashed vs analytic, dotted band</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def format_order(value: object) -> str:
    """Format a Taylor order with two decimals, or a dash for none."""
    f = _as_float(value)
    return "\u2013" if f is None else f"{f:.2f}"


# ---------------------------------------------------------------------------
# The page


def page_environment(
    filters: Mapping[str, Callable[..., Any]],
    tests: Mapping[str, Callable[..., bool]] | None = None,
) -> jinja2.Environment:
    """Return a jinja2 environment for the package's templates.

    Autoescaping is on for ``.html.j2`` templates, an undefined name is an
    error rather than an empty string, and ``filters`` and ``tests`` are
    added to the defaults.
    """
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gradcheck", "templates"),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "html.j2"), default_for_string=True
        ),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(filters)
    env.tests.update(tests or {})
    return env


@functools.cache
def _environment() -> jinja2.Environment:
    return page_environment(
        {
            "sci": format_sci,
            "value": format_value,
            "duration": format_duration,
            "started": format_started,
            "details": format_details,
            "size": _quantity_size,
            "band_ratio": _entry_band_ratio,
            "sweep_svg": lambda sweeps: Markup(render_sweep_svg(sweeps)),
            "order": format_order,
        },
        {"over": _is_over},
    )


def _page_context(campaign: Mapping[str, Any]) -> dict[str, Any]:
    """Collect what the template shows, so the template only lays it out."""
    sections = []
    anchors: dict[str, str] = {}
    failures = []
    inconclusive = []
    for s, section in enumerate(campaign["sections"]):
        rows = []
        for c, check in enumerate(section.get("checks", ())):
            anchor = f"check-{s}-{c}"
            anchors.setdefault(str(check.get("label", "")), anchor)
            row = {
                "check": check,
                "anchor": anchor,
                "section": section.get("name", ""),
                "worst_ratio": _worst_band_ratio(check),
            }
            rows.append(row)
            if check.get("verdict") == "fail":
                failures.append(row)
            elif check.get("verdict") == "inconclusive":
                inconclusive.append(row)
        sections.append({"section": section, "rows": rows, "index": s})

    counts = dict(campaign["counts"])
    n_fail = int(counts.get("fail", 0) or 0) or len(failures)
    n_inconclusive = int(counts.get("inconclusive", 0) or 0)
    return {
        "c": campaign,
        "counts": counts,
        "passed": n_fail == 0,
        "n_inconclusive": n_inconclusive,
        "interrupted": bool(campaign.get("interrupted", False)),
        "sections": sections,
        "failures": failures,
        "max_cards": MAX_FAILURE_CARDS,
        "inconclusive": inconclusive,
        "anchors": anchors,
        "largest": campaign.get("largest_discrepancies") or [],
        "shrunk": campaign.get("shrunk"),
        "environment": campaign.get("environment") or {},
        "settings": campaign.get("settings") or {},
        "plot_svg": Markup(render_plot_svg(campaign)),
    }


def render_html(campaign: dict) -> str:
    """Render the campaign as one self-contained HTML page.

    The page opens offline: its CSS is inline, the plot is inline SVG, and
    it loads no scripts, fonts or images. Every value from the campaign is
    HTML-escaped.

    Args:
        campaign: the campaign dict, as the campaign module produces it.

    Returns:
        The page's HTML.

    Raises:
        InvalidTypeError: ``campaign`` is not a dict.
        InvalidArgumentError: it lacks ``title``, ``counts`` or ``sections``.
    """
    campaign = _check_campaign(campaign)
    template = _environment().get_template("report.html.j2")
    return template.render(**_page_context(campaign))


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    fd, temp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates the file readable by its owner only; a report is
        # meant to be shared like any file the user writes.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_name, 0o666 & ~umask)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_report(campaign: dict, directory: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``index.html`` and ``results.json`` into ``directory``, atomically.

    The directory is created if missing. Each file is first written to a
    temporary file next to it and then moved into place, so an existing
    report is replaced whole and no partial file is ever visible.

    Args:
        campaign: the campaign dict, as the campaign module produces it.
        directory: where the report goes, for example ``reports/delta-rule``.

    Returns:
        The paths of ``index.html`` and ``results.json``.

    Raises:
        InvalidTypeError: ``campaign`` is not a dict.
        InvalidArgumentError: it lacks ``title``, ``counts`` or ``sections``.
        OSError: the directory cannot be created or written.
    """
    campaign = _check_campaign(campaign)
    return write_page(
        directory,
        (HTML_NAME, render_html(campaign)),
        (JSON_NAME, results_json(campaign)),
    )


def write_page(
    directory: str | os.PathLike, page: tuple[str, str], data: tuple[str, Any]
) -> tuple[Path, Path]:
    """Write an HTML page and its data as JSON into ``directory``, atomically.

    Args:
        directory: created if missing.
        page: the page's file name and HTML.
        data: the JSON file's name and what goes in it (NaN and infinities
            are written as strings; see :func:`gradcheck._result.strict_json`).

    Returns:
        The paths of the two files.
    """
    text = json.dumps(
        strict_json(data[1]), indent=2, allow_nan=False, ensure_ascii=False
    )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    html_path, json_path = directory / page[0], directory / data[0]
    _write_atomically(html_path, page[1])
    _write_atomically(json_path, text + "\n")
    logger.info("report written to %s (%d bytes)", html_path, len(page[1]))
    return html_path, json_path
