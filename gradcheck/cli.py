# SPDX-License-Identifier: MIT
"""The command line: ``gradcheck report`` (also ``python -m gradcheck``).

Exit codes: 0 when nothing failed, 1 when a derivation failed a check, 2 on
bad usage or input. This module is the only one that prints or configures
logging.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from gradcheck._campaign import run_campaign, summarise
from gradcheck._check import load_derivation
from gradcheck._compare import Verdict
from gradcheck._delta_rule import delta_rule
from gradcheck._result import CheckResult
from gradcheck.errors import GradcheckError

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradcheck",
        description="Prove a hand-derived gradient right or wrong.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    report = verbs.add_parser(
        "report",
        help="check the delta rule on generated networks and real data, "
        "and write an HTML report",
        description="Check a delta-rule derivation on generated architectures "
        "and on a network trained on scikit-learn's digits; write "
        "index.html and results.json. Exits 1 if any check fails.",
    )
    report.add_argument(
        "--derivation",
        metavar="MODULE:FUNCTION",
        help="the implementation to check, with the signature of "
        "gradcheck.delta_rule (default: the built-in one)",
    )
    report.add_argument(
        "--count",
        type=_non_negative_int,
        default=200,
        help="generated architectures to check (default: 200)",
    )
    report.add_argument(
        "--seed", type=int, default=0, help="Hypothesis seed (default: 0)"
    )
    report.add_argument(
        "--epochs",
        type=_non_negative_int,
        default=60,
        help="epochs of training on the digits (default: 60)",
    )
    report.add_argument(
        "--no-digits", action="store_true", help="skip the real-data checks"
    )
    report.add_argument(
        "--no-shrink",
        action="store_true",
        help="do not shrink a failure to the smallest failing network",
    )
    report.add_argument(
        "--out",
        type=Path,
        default=Path("reports"),
        help="directory for index.html and results.json (default: reports)",
    )
    report.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def _run_report(args: argparse.Namespace) -> int:
    from gradcheck._report import write_report

    if args.derivation:
        derivation = load_derivation(args.derivation)
        name = args.derivation
    else:
        derivation, name = delta_rule, "gradcheck.delta_rule (built-in)"

    total = args.count + (0 if args.no_digits else 4)
    with tqdm(
        total=total, desc="checks", unit="check", disable=args.quiet, file=sys.stderr
    ) as bar:

        def on_result(result: CheckResult) -> None:
            bar.update(1)
            if result.verdict is Verdict.FAIL:
                bar.set_postfix_str(f"last failure: {result.first_wrong}")

        campaign = run_campaign(
            count=args.count,
            seed_=args.seed,
            derivation=derivation,
            derivation_name=name,
            digits_epochs=None if args.no_digits else args.epochs,
            shrink=not args.no_shrink,
            on_result=on_result,
        )

    summary = summarise(campaign)
    html, results = write_report(summary, args.out)
    counts = summary["counts"]
    print(
        f"{counts['checks']} checks: {counts['pass']} passed, {counts['fail']} "
        f"failed, {counts['inconclusive']} inconclusive ({campaign.duration_s:.0f} s)"
    )
    if campaign.interrupted:
        print("interrupted: the report holds the partial results")
    firsts = sorted({c.first_wrong for c in campaign.checks if c.first_wrong})
    if firsts:
        print(f"first wrong quantities: {', '.join(firsts)}")
    if campaign.shrunk is not None:
        print(f"smallest failing network: {campaign.shrunk.network.describe()}")
    print(f"report: {html}\nresults: {results}")
    if campaign.interrupted:
        return 130
    return EXIT_FAILED if campaign.has_failures else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return _run_report(args)
    except GradcheckError as err:
        print(f"gradcheck: error: {err}", file=sys.stderr)
        return EXIT_USAGE
