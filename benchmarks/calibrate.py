# SPDX-License-Identifier: MIT
"""Measure false alarm rates and detection thresholds; print a table, write JSON.

Usage: python benchmarks/calibrate.py [--count N] [--threshold-count M]
       [--seed S] [--out reports/calibration]

Writes calibration.json and index.html under --out. See
gradcheck._calibrate for what is measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jinja2
from tqdm import tqdm

from gradcheck._calibrate import CONDITIONS, THRESHOLDS, iter_rows, run_calibration
from gradcheck._report import _write_atomically
from gradcheck._result import strict_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--count",
        type=int,
        default=1250,
        help="right cases per condition (default 1250: 10,000 in all)",
    )
    parser.add_argument(
        "--threshold-count",
        type=int,
        default=20,
        help="cases per detection-threshold setting (default 20)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("reports/calibration"))
    args = parser.parse_args(argv)
    for option in ("count", "threshold_count"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")

    total = args.count * len(CONDITIONS) + args.threshold_count * len(THRESHOLDS)
    with tqdm(total=total, unit="case", file=sys.stderr) as bar:
        calibration = run_calibration(
            args.count,
            args.threshold_count,
            args.seed,
            progress=lambda what, done: (bar.set_description(what), bar.update(1)),
        )

    rows = list(iter_rows(calibration))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(
                cell.rjust(w) if i else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    for name, row in calibration["false_alarms"].items():
        for line in row["explained"]:
            print(f"  {name} {line}")
    print()
    print("smallest relative error detected (median [min, max] over cases):")
    for name, row in calibration["thresholds"].items():
        one, whole = row["one-entry"], row["whole-gradient"]
        spans = [
            f"{m['median']:.2e} [{m['min']:.1e}, {m['max']:.1e}]" for m in (one, whole)
        ]
        print(f"  {name:14s} one entry {spans[0]}   whole gradient {spans[1]}")

    args.out.mkdir(parents=True, exist_ok=True)
    data = json.dumps(strict_json(calibration), indent=2, allow_nan=False)
    _write_atomically(args.out / "calibration.json", data + "\n")
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gradcheck", "templates"), autoescape=True
    )
    html = env.get_template("calibration.html.j2").render(c=calibration)
    _write_atomically(args.out / "index.html", html)
    print(f"json: {args.out / 'calibration.json'}\nreport: {args.out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
