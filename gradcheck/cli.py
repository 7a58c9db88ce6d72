# SPDX-License-Identifier: MIT
"""The command line: ``gradcheck report``, ``gradcheck check``, ``gradcheck mutants``.

``gradcheck report`` runs the delta-rule campaign; ``gradcheck check LOSS
GRAD --params params.npz`` checks one hand-written gradient; ``gradcheck
mutants`` measures the checker on its catalogue of mistakes. All are also
``python -m gradcheck``. ``module:function`` targets are imported with the
current directory on ``sys.path``, so a module next to you is found.

Exit codes: 0 when nothing failed, 1 when a derivation failed a check, 2 on
bad usage or input (a missing or unreadable file, an unknown module, a loss
that is not a scalar: any :class:`~gradcheck.GradcheckError`). An
inconclusive check exits 0 with a warning: the references disagreed, which
says nothing against the gradient. This module is the only one that prints
or configures logging.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import random
import re
import shlex
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gradcheck._campaign import BUILT_IN, run_campaign, summarise, summarise_checks
from gradcheck._check import load_callable, load_derivation
from gradcheck._compare import Verdict
from gradcheck._delta_rule import delta_rule
from gradcheck._result import CheckResult, format_failure
from gradcheck.errors import GradcheckError, InvalidArgumentError
from gradcheck.strategies import delta_rule_cases, seeded_delta_rule_cases

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Positional arrays as np.savez writes them: arr_0, arr_1, ...
_POSITIONAL = re.compile(r"arr_(\d+)")


def _int_at_least(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected {least} or more, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _add_check_parser(verbs: argparse._SubParsersAction) -> None:
    check = verbs.add_parser(
        "check",
        help="check one hand-written gradient against finite differences and JAX",
        description="Check GRAD, the hand-written gradient of LOSS, at the "
        "parameters in --params with the data in --data, against central "
        "finite differences and JAX autodiff of LOSS. Exits 0 if it passes "
        "(or is inconclusive, with a warning), 1 if it is wrong, 2 on bad "
        "usage or input.",
        epilog="params.npz: one array per parameter, as np.savez(path, "
        "**params) writes it; a name with '/' (layer1/W) becomes a nested dict "
        "(params['layer1']['W']). data.npz: the further arguments of LOSS and "
        "GRAD, in order: positional arrays as np.savez(path, x, labels) "
        "writes them (arr_0, arr_1, ...), or named arrays in the order they "
        "were saved.",
    )
    check.add_argument(
        "loss",
        metavar="LOSS",
        help="the loss as module:function, loss(params, *data) -> scalar, "
        "written with jax.numpy",
    )
    check.add_argument(
        "grad",
        metavar="GRAD",
        help="the gradient under test as module:function, grad(params, *data), "
        "returning arrays shaped like params",
    )
    check.add_argument(
        "--params",
        type=Path,
        required=True,
        metavar="NPZ",
        help="the parameters, a .npz archive (see below)",
    )
    check.add_argument(
        "--data", type=Path, metavar="NPZ", help="the data arrays, a .npz archive"
    )
    check.add_argument(
        "--batch-size",
        type=_positive_int,
        metavar="N",
        help="examples in the data, to name a gradient off by this factor a "
        "mean-versus-sum mistake (default: the length of the first data array)",
    )
    check.add_argument(
        "--rel-step",
        type=_positive_float,
        metavar="X",
        help="finite-difference step relative to max(1, |w|) (default: cbrt of "
        "float64 eps)",
    )
    check.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of Python's and NumPy's global random generators, set before "
        "LOSS and GRAD are imported, for code that draws from them (default: "
        "0); gradcheck's own draws are always seeded",
    )
    check.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help="write the check (verdict, every quantity's comparison) as JSON",
    )
    check.add_argument(
        "--html",
        type=Path,
        metavar="DIR",
        help="write the HTML report (index.html and results.json) into DIR",
    )
    check.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


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
        "--seeded-arrays",
        action="store_true",
        help="draw weights, inputs and targets from a seed that Hypothesis "
        "draws (much faster; arrays then shrink only by their seed)",
    )
    report.add_argument(
        "--out",
        type=Path,
        default=Path("reports"),
        help="directory for index.html and results.json (default: reports)",
    )
    report.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_check_parser(verbs)
    _add_mutants_parser(verbs)
    return parser


def _importable_from_cwd() -> None:
    """Put the current directory on ``sys.path``, as ``python -m`` does."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _prepare_out(out: Path) -> None:
    """Make sure the report folder can be written, before any work is done."""
    if str(out) == "":
        raise InvalidArgumentError(
            "--out must name a folder, got an empty string", name="--out", value=out
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InvalidArgumentError(
            f"--out {str(out)!r} cannot be used as the report folder: {err}",
            name="--out",
            value=str(out),
        ) from err
    if not os.access(out, os.W_OK):
        raise InvalidArgumentError(
            f"--out {str(out)!r} is not writable", name="--out", value=str(out)
        )


def _run_report(args: argparse.Namespace) -> int:
    from gradcheck._report import write_report

    if args.count == 0 and args.no_digits:
        raise InvalidArgumentError(
            "nothing to check: --count 0 with --no-digits runs no check",
            name="--count",
            value=0,
        )
    _prepare_out(args.out)
    if args.derivation:
        _importable_from_cwd()
        derivation = load_derivation(args.derivation)
        name = args.derivation
    else:
        derivation, name = delta_rule, BUILT_IN

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
            cases=seeded_delta_rule_cases if args.seeded_arrays else delta_rule_cases,
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
        print(
            f"smallest failing network: {campaign.shrunk.subject}, "
            f"first wrong quantity {campaign.shrunk.first_wrong}"
        )
    print(f"report: {html}\nresults: {results}")
    if campaign.interrupted:
        return 130
    return EXIT_FAILED if campaign.has_failures else EXIT_OK


def _load_npz(path: Path, option: str) -> dict[str, np.ndarray]:
    """Read every array of a .npz archive, in file order; never unpickle."""
    if not path.is_file():
        raise InvalidArgumentError(
            f"{option} {str(path)!r}: no such file", name=option, value=str(path)
        )
    try:
        # np.load would read anything else as a .npy file or a pickle.
        if not zipfile.is_zipfile(path):
            raise ValueError("it is not a zip file; write it with np.savez")
        with np.load(path, allow_pickle=False) as loaded:
            return {name: loaded[name] for name in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise InvalidArgumentError(
            f"{option} {str(path)!r} is not a readable .npz archive: {err}",
            name=option,
            value=str(path),
        ) from err


def _nested(arrays: dict[str, np.ndarray], option: str) -> dict[str, object]:
    """Turn names like ``layer1/W`` into nested dicts."""
    tree: dict[str, object] = {}
    for name, array in arrays.items():
        parts = name.split("/")
        node = tree
        for depth, part in enumerate(parts):
            clash = not part or (
                part in node
                and (depth == len(parts) - 1 or not isinstance(node[part], dict))
            )
            if clash:
                raise InvalidArgumentError(
                    f"{option}: the array name {name!r} clashes with another or "
                    "has an empty part; use names like 'W' or 'layer1/W'",
                    name=option,
                    value=name,
                )
            if depth == len(parts) - 1:
                node[part] = array
            else:
                node = node.setdefault(part, {})  # type: ignore[assignment]
    return tree


def _positional(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Order data arrays: by number for ``arr_N`` names, else as saved."""
    names = list(arrays)
    if names and all(_POSITIONAL.fullmatch(n) for n in names):
        names.sort(key=lambda n: int(n[len("arr_") :]))
    return tuple(arrays[n] for n in names)


def _verdict_line(result: CheckResult, args: argparse.Namespace) -> str:
    if result.verdict is Verdict.PASS:
        references = (
            "finite differences"
            if result.autodiff_skipped
            else "finite differences and JAX autodiff"
        )
        return (
            f"pass: {args.grad} agrees with {references} of {args.loss} on "
            f"{result.subject}"
        )
    if result.verdict is Verdict.FAIL:
        return f"FAIL: {args.grad} is wrong; first wrong quantity: {result.first_wrong}"
    if result.verdict is Verdict.NOT_DIFFERENTIABLE:
        kinks = sum(q.n_not_differentiable for q in result.quantities)
        return (
            f"not-differentiable: {args.loss} has a kink at {kinks} entries of "
            f"{result.subject} (left and right derivatives differ); {args.grad} "
            "gives a valid subgradient there and agrees everywhere else; it is "
            "not counted as a failure"
        )
    return (
        f"inconclusive: finite differences and JAX autodiff of {args.loss} "
        f"disagree on {result.n_inconclusive_quantities} of "
        f"{len(result.quantities)} quantities, so they cannot judge {args.grad} "
        "there; it is not counted as a failure"
    )


def _run_check(args: argparse.Namespace, command: str) -> int:
    from gradcheck._gradient import compare_gradient
    from gradcheck._report import _write_atomically, write_report
    from gradcheck._result import strict_json

    # Seeded first: a module may draw random numbers when it is imported.
    random.seed(args.seed)
    np.random.seed(args.seed)
    _importable_from_cwd()
    loss = load_callable(args.loss, role="loss")
    grad = load_callable(args.grad, role="grad")
    params = _nested(_load_npz(args.params, "--params"), "--params")
    data = _positional(_load_npz(args.data, "--data")) if args.data else ()
    batch_size = args.batch_size
    if batch_size is None and data and np.ndim(data[0]) >= 1 and len(data[0]):
        batch_size = len(data[0])

    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    start = time.perf_counter()
    # The bar appears only on a check that takes more than a second.
    with tqdm(
        desc="perturbed points",
        unit="pt",
        disable=args.quiet,
        file=sys.stderr,
        delay=1.0,
        leave=False,
    ) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = compare_gradient(
            loss,
            grad,
            params,
            *data,
            rel_step=args.rel_step,
            batch_size=batch_size,
            label=args.grad,
            reproduce=command,
            progress=progress,
        )
    duration = round(time.perf_counter() - start, 2)

    code = EXIT_FAILED if result.verdict is Verdict.FAIL else EXIT_OK
    print(_verdict_line(result, args))
    if result.verdict is Verdict.FAIL:
        print()
        print(format_failure(result))
    elif result.verdict is Verdict.NOT_DIFFERENTIABLE:
        for q in result.quantities:
            for w in q.worst:
                if w.is_kink:
                    print(
                        f"  {w.name}: analytic {w.analytic:.10g}, kink: left "
                        f"{w.left:.10g}, right {w.right:.10g}"
                    )
    elif result.verdict is Verdict.INCONCLUSIVE:
        print(
            "gradcheck: warning: the check is inconclusive (numerical trouble); "
            "try another point or --rel-step",
            file=sys.stderr,
        )

    if args.json is not None:
        record = {
            **result.to_dict(),
            "loss": args.loss,
            "grad": args.grad,
            "exit_code": code,
            "message": format_failure(result) if code == EXIT_FAILED else "",
        }
        text = json.dumps(strict_json(record), indent=2, allow_nan=False)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(args.json, text + "\n")
        print(f"json: {args.json}")
    if args.html is not None:
        summary = summarise_checks(
            "gradcheck check",
            f"{args.grad} (loss {args.loss})",
            [("Command line", f"{command}", [result])],
            seed=args.seed,
            started=started,
            duration_s=duration,
        )
        html, results = write_report(summary, args.html)
        print(f"report: {html}\nresults: {results}")
    return code


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    return seeds


def _add_mutants_parser(verbs: argparse._SubParsersAction) -> None:
    mutants = verbs.add_parser(
        "mutants",
        help="measure the checker on a catalogue of classic derivation mistakes",
        description="Run every mutant of gradcheck.mutants on generated points, "
        "sharing each point's references, and write mutants.html and "
        "mutants.json. Exits 1 if a mutant that changes the gradient beyond "
        "the band is missed, or if the right derivation fails anywhere.",
    )
    mutants.add_argument(
        "--count",
        type=_non_negative_int,
        default=100,
        help="distinct generated architectures for delta-rule mutants (default: 100)",
    )
    mutants.add_argument(
        "--gradient-count",
        type=_non_negative_int,
        default=6,
        help="generated points per gradient model (default: 6)",
    )
    mutants.add_argument(
        "--seed", type=int, default=0, help="Hypothesis seed (default: 0)"
    )
    mutants.add_argument(
        "--search-seeds",
        type=_seeds,
        default=(0, 1, 2, 3, 4),
        metavar="S,S,...",
        help="seeds of the examples-to-catch search, '' to skip it "
        "(default: 0,1,2,3,4)",
    )
    mutants.add_argument(
        "--search-budget",
        type=_positive_int,
        default=60,
        help="examples per search run (default: 60)",
    )
    mutants.add_argument(
        "--only",
        metavar="NAME,...",
        help="run only these mutants (comma-separated names)",
    )
    mutants.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, so that the mutants it registers run too "
        "(repeatable)",
    )
    mutants.add_argument(
        "--out",
        type=Path,
        default=Path("reports"),
        help="directory for mutants.html and mutants.json (default: reports)",
    )
    mutants.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _run_mutants(args: argparse.Namespace) -> int:
    import importlib

    from gradcheck import mutants as catalogue_module
    from gradcheck._mutation_campaign import (
        run_mutation_campaign,
        summarise_mutations,
    )
    from gradcheck._mutation_report import write_mutation_report

    _prepare_out(args.out)
    _importable_from_cwd()
    for module in args.plugin:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise InvalidArgumentError(
                f"--plugin {module!r} cannot be imported: {err}",
                name="--plugin",
                value=module,
            ) from err
    chosen = catalogue_module.catalogue()
    if args.only:
        chosen = [catalogue_module.get(n.strip()) for n in args.only.split(",")]

    with tqdm(
        desc="mutation campaign", unit="step", disable=args.quiet, file=sys.stderr
    ) as bar:

        def progress(message: str) -> None:
            bar.update(1)
            bar.set_postfix_str(message[:60])

        campaign = run_mutation_campaign(
            count=args.count,
            seed_=args.seed,
            mutants=chosen,
            gradient_count=args.gradient_count,
            search_seeds=args.search_seeds,
            search_budget=args.search_budget,
            on_progress=progress,
        )
    summary = summarise_mutations(campaign)
    html, results = write_mutation_report(summary, args.out)

    totals = summary["totals"]
    print(
        f"{len(chosen)} mutants: "
        + ", ".join(f"{totals[k]} {k}" for k in summary["outcomes"])
        + f" ({campaign.duration_s:.0f} s)"
    )
    rate = totals["localisation_rate"]
    if rate is not None:
        print(
            f"first wrong quantity is the touched one in {totals['localised']} of "
            f"{totals['detected']} detections ({100 * rate:.1f}%)"
        )
    for row in summary["mutants"]:
        if row["counts"]["missed"]:
            print(f"MISSED: {row['name']} on {row['counts']['missed']} points")
    right = summary["right"]
    if right["failed"]:
        print(f"the right derivation FAILED on {len(right['failed'])} points")
    print(f"report: {html}\nresults: {results}")
    if campaign.interrupted:
        print("interrupted: the report holds the partial results")
        return EXIT_INTERRUPTED
    return EXIT_OK if summary["passed"] else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        if args.verb == "check":
            return _run_check(args, shlex.join(["gradcheck", *argv]))
        if args.verb == "mutants":
            return _run_mutants(args)
        return _run_report(args)
    except (GradcheckError, OSError) as err:
        print(f"gradcheck: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("gradcheck: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
