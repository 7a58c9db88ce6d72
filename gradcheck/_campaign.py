# SPDX-License-Identifier: MIT
"""Many checks, collected: generated architectures and a real training run.

A campaign checks one derivation on

* ``count`` architectures that Hypothesis generates from a fixed seed (see
  :mod:`gradcheck.strategies`), and
* a network trained on scikit-learn's digits with the document's update
  rule, at several checkpoints along training;

and, when any generated check fails, asks Hypothesis to shrink the failure
to the smallest failing network it can find. The result is a plain dict
(see :func:`summarise`) that the report writer turns into HTML and JSON.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata

import numpy as np
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.strategies import SearchStrategy

from gradcheck._check import Derivation, compare_delta_rule
from gradcheck._compare import SAFETY_FACTOR, QuantityComparison, Verdict
from gradcheck._delta_rule import QUANTITY_KINDS, delta_rule
from gradcheck._digits import DIGITS_NETWORK, train_on_digits
from gradcheck._networks import Network
from gradcheck._numeric import EPS, ROUNDING_FACTOR
from gradcheck._result import CheckResult
from gradcheck.errors import (
    DerivationError,
    GradcheckError,
    GradientMismatchError,
    InvalidArgumentError,
)
from gradcheck.strategies import DeltaRuleCase, delta_rule_cases

__all__ = ["Campaign", "run_campaign", "summarise", "summarise_checks"]

logger = logging.getLogger(__name__)


GENERATED = "Generated architectures"

# The first wrong quantity of a check whose derivation raised.
RAISED = "(the derivation raised)"
DIGITS = "Real data: scikit-learn digits"

# Examples Hypothesis may draw per distinct architecture wanted.
DRAWS_PER_ARCHITECTURE = 20

# Checks spent on shrinking a failure; each costs a compile for a new shape.
SHRINK_BUDGET = 150

# Quantity kinds other than the delta rule's (parameter names of a general
# gradient, such as W1 or layers[0].b) shown in the largest-discrepancy
# table, worst first; a large test session can have many.
MAX_OTHER_KINDS = 20

OnResult = Callable[[CheckResult], None]
Cases = Callable[[], SearchStrategy[DeltaRuleCase]]


@dataclass
class Campaign:
    """What a campaign found, possibly cut short.

    Attributes:
        derivation: the derivation checked, as a readable name.
        count: generated architectures requested.
        seed: the Hypothesis seed of the generated architectures.
        sections: check results per section, in the order run.
        descriptions: a sentence per section, for the report.
        shrunk: the smallest failing generated check, if any failed.
        interrupted: whether the run was cut short (results are partial).
        started: when the run started (UTC).
        duration_s: wall time of the run.
    """

    derivation: str
    count: int
    seed: int
    sections: dict[str, list[CheckResult]] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    shrunk: CheckResult | None = None
    interrupted: bool = False
    started: str = ""
    duration_s: float = 0.0

    @property
    def checks(self) -> list[CheckResult]:
        """Every check, section by section."""
        return [c for checks in self.sections.values() for c in checks]

    @property
    def has_failures(self) -> bool:
        """Whether any check failed."""
        return any(c.verdict is Verdict.FAIL for c in self.checks)


def _check_count(count: object) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise InvalidArgumentError(
            f"count must be a non-negative int, got count={count!r}",
            name="count",
            value=count,
        )
    return count


def _hypothesis_settings(max_examples: int, phases: list[Phase]) -> settings:
    return settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


# How reports name the built-in derivation.
BUILT_IN = "gradcheck.delta_rule (built-in)"


class _Enough(BaseException):
    """Raised inside a Hypothesis run to end it: enough cases were checked."""


class _Misbehaved(BaseException):
    """Carries a derivation's misuse out of a Hypothesis run, unshrunk.

    A derivation that returns something other than its quantities, or
    changes its inputs, cannot be checked anywhere; Hypothesis would read
    the error as a failure to shrink and, since a network is checked only
    once, report it as flaky. Not an Exception, so Hypothesis lets it
    through at once.
    """

    def __init__(self, error: GradcheckError) -> None:
        super().__init__(str(error))
        self.error = error


def _compare(
    network: Network,
    args: tuple[object, ...],
    derivation: Derivation,
    label: str,
    reproduce: str = "",
) -> CheckResult:
    """Check one case; a derivation that raises is recorded as a failure.

    One network where the derivation crashes (a shape that only some
    architectures have, say) must not cost the rest of the campaign.
    """
    try:
        return compare_delta_rule(
            *args, derivation=derivation, label=label, reproduce=reproduce
        )
    except DerivationError as err:
        logger.debug("derivation raised on %s: %s", network.describe(), err)
        return CheckResult(
            verdict=Verdict.FAIL,
            quantities=(),
            first_wrong=RAISED,
            subject=network.describe(),
            n_params=network.n_params,
            network=network,
            label=label,
            reproduce=reproduce,
            details={"error": str(err)},
        )
    except GradcheckError as err:
        raise _Misbehaved(err) from err


def _run_generated(
    campaign: Campaign, derivation: Derivation, on_result: OnResult, cases: Cases
) -> None:
    if not campaign.count:
        return
    results = campaign.sections.setdefault(GENERATED, [])

    seen: set[Network] = set()
    command = f"gradcheck report --seed {campaign.seed}"
    if campaign.derivation != BUILT_IN:
        command += f" --derivation {campaign.derivation}"
    if cases is not delta_rule_cases:
        command += " --seeded-arrays"

    # Hypothesis often draws an architecture again with other weights; only
    # the first draw of each is checked, so that `count` architectures are
    # distinct. Drawing costs milliseconds, checking a new shape most of a
    # second, so the generous example budget is cheap.
    @seed(campaign.seed)
    @_hypothesis_settings(DRAWS_PER_ARCHITECTURE * campaign.count, [Phase.generate])
    @given(cases())
    def explore(case: DeltaRuleCase) -> None:
        if case.network in seen:
            return
        seen.add(case.network)
        number = len(results)
        result = _compare(
            case.network,
            case.args,
            derivation,
            label=f"generated #{number}",
            reproduce=f"{command} --count {number + 1}, the last example",
        )
        result.details["max_abs_weight"] = float(
            f"{max(np.abs(w).max() for w in case.params.values()):.3g}"
        )
        results.append(result)
        on_result(result)
        if len(results) >= campaign.count:
            raise _Enough

    # Not an Exception, so Hypothesis lets it through at once instead of
    # treating it as a failure to shrink.
    with contextlib.suppress(_Enough):
        explore()
    if len(results) < campaign.count:
        logger.warning(
            "Hypothesis drew only %d distinct architectures of %d asked for",
            len(results),
            campaign.count,
        )


def _shrink_failure(
    campaign: Campaign, derivation: Derivation, cases: Cases
) -> CheckResult | None:
    """Let Hypothesis shrink a failing generated case to the smallest network.

    Failing is made to raise, so Hypothesis searches and then shrinks. After
    ``SHRINK_BUDGET`` checks every example counts as passing, which ends
    the shrink with the smallest failure found so far.
    """
    calls = 0
    smallest: list[CheckResult] = []

    @seed(campaign.seed)
    @_hypothesis_settings(campaign.count, [Phase.generate, Phase.shrink])
    @given(cases())
    def search(case: DeltaRuleCase) -> None:
        nonlocal calls
        calls += 1
        if calls > SHRINK_BUDGET:
            return
        result = _compare(
            case.network, case.args, derivation, label="smallest failing network"
        )
        if result.verdict is Verdict.FAIL:
            result.details["params"] = {k: v.tolist() for k, v in case.params.items()}
            result.details["x"] = case.x.tolist()
            result.details["d"] = case.d.tolist()
            smallest.append(result)
            raise GradientMismatchError("failed", result=result)

    with contextlib.suppress(GradientMismatchError, ExceptionGroup):
        search()
    if not smallest:
        return None
    # Hypothesis replays the minimal example last.
    shrunk = smallest[-1]
    return dataclasses.replace(
        shrunk, reproduce=f"Hypothesis, --seed {campaign.seed}, after {calls} checks"
    )


def _run_digits(
    campaign: Campaign, derivation: Derivation, epochs: int, on_result: OnResult
) -> None:
    results = campaign.sections.setdefault(DIGITS, [])
    for checkpoint in train_on_digits(epochs=epochs):
        result = _compare(
            DIGITS_NETWORK,
            (DIGITS_NETWORK, checkpoint.params, checkpoint.x, checkpoint.d, 0.1),
            derivation,
            label=f"digits, epoch {checkpoint.epoch}",
            reproduce=f"--epochs {epochs}, checkpoint at epoch {checkpoint.epoch}",
        )
        result.details.update(checkpoint.details)
        results.append(result)
        on_result(result)


def run_campaign(
    count: int = 200,
    seed_: int = 0,
    derivation: Derivation = delta_rule,
    derivation_name: str = BUILT_IN,
    digits_epochs: int | None = 60,
    shrink: bool = True,
    on_result: OnResult | None = None,
    cases: Cases = delta_rule_cases,
) -> Campaign:
    """Run a campaign; on ``KeyboardInterrupt``, return what was found so far.

    Args:
        count: generated architectures to check, 0 or more.
        seed_: the Hypothesis seed of the generated architectures.
        derivation: the implementation under test, with the signature of
            :func:`gradcheck.delta_rule`.
        derivation_name: how reports name it.
        digits_epochs: epochs of training on the digits; ``None`` skips the
            real-data checks.
        shrink: whether to shrink a generated failure to a smallest network.
        on_result: called with each check result as it is made, for
            progress display.
        cases: the strategy of generated cases, for exploring and
            shrinking: :func:`gradcheck.strategies.delta_rule_cases`, or
            :func:`~gradcheck.strategies.seeded_delta_rule_cases`, which
            draws far faster.

    Returns:
        The :class:`Campaign`; ``interrupted`` is set if it was cut short.
    """
    count = _check_count(count)
    on_result = on_result or (lambda result: None)
    campaign = Campaign(derivation=derivation_name, count=count, seed=int(seed_))
    campaign.started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if count:
        campaign.descriptions[GENERATED] = (
            f"{count} distinct architectures drawn by Hypothesis from seed "
            f"{seed_}, each with its own weights, inputs and targets: 0 to 4 "
            "hidden layers of 1 to 8 units, random skip connections, bias on or "
            "off, weights from 1e-3 to saturating scales, batches of 1 to 8."
        )
        if cases is not delta_rule_cases:
            campaign.descriptions[GENERATED] += (
                " Weights, inputs and targets come from numpy, seeded by a "
                "number Hypothesis draws."
            )
    if digits_epochs is not None:
        campaign.descriptions[DIGITS] = (
            f"A {DIGITS_NETWORK.describe()} network trained for {digits_epochs} "
            "epochs on scikit-learn's 8x8 digits with the delta rule's own update "
            "(mini-batches of 32, eta 0.1), checked on 48 held-out images at "
            "initialisation, after one epoch, midway and at the end, where many "
            "units have saturated."
        )
    start = time.perf_counter()
    try:
        _run_generated(campaign, derivation, on_result, cases)
        if digits_epochs is not None:
            _run_digits(campaign, derivation, digits_epochs, on_result)
        failed = any(
            c.verdict is Verdict.FAIL for c in campaign.sections.get(GENERATED, [])
        )
        if shrink and failed:
            logger.info("shrinking the first failure")
            campaign.shrunk = _shrink_failure(campaign, derivation, cases)
    except KeyboardInterrupt:
        logger.warning("interrupted: keeping the partial results")
        campaign.interrupted = True
    except _Misbehaved as stop:
        raise stop.error from None
    campaign.duration_s = round(time.perf_counter() - start, 2)
    return campaign


def _severity(row: dict[str, object]) -> float:
    """Sort key: a row's band ratio, with NaN (no number at all) as the worst."""
    ratio = float(row["max_band_ratio"])  # type: ignore[arg-type]
    return math.inf if math.isnan(ratio) else ratio


def _largest_discrepancies(checks: list[CheckResult]) -> list[dict[str, object]]:
    """Return one row per quantity kind: its largest discrepancies, and where.

    The delta rule's kinds come first, in the document's order; the kinds of
    general gradients (a parameter's name without its index) follow, worst
    band ratio first, at most ``MAX_OTHER_KINDS`` of them.
    """
    by_kind: dict[str, list[tuple[CheckResult, QuantityComparison]]] = {}
    for check in checks:
        for q in check.quantities:
            by_kind.setdefault(q.kind, []).append((check, q))

    rows = []
    for kind, found in by_kind.items():
        check, worst = max(found, key=lambda cq: cq[1].max_band_ratio)
        rows.append(
            {
                "kind": kind,
                "max_abs_discrepancy": max(q.max_abs_discrepancy for _, q in found),
                "max_rel_discrepancy": max(q.max_rel_discrepancy for _, q in found),
                "max_band_ratio": worst.max_band_ratio,
                "max_reference_gap": max(q.max_reference_gap for _, q in found),
                "check": check.label,
                "entry": worst.worst[0].name if worst.worst else worst.name,
            }
        )
    known = [r for kind in QUANTITY_KINDS for r in rows if r["kind"] == kind]
    others = [r for r in rows if r["kind"] not in QUANTITY_KINDS]
    others.sort(key=_severity, reverse=True)
    return known + others[:MAX_OTHER_KINDS]


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("numpy", "jax", "hypothesis", "gradcheck"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def summarise_checks(
    title: str,
    derivation: str,
    sections: Sequence[tuple[str, str, Sequence[CheckResult]]],
    *,
    seed: int | None = None,
    count: int | None = None,
    interrupted: bool = False,
    started: str = "",
    duration_s: float = 0.0,
    shrunk: CheckResult | None = None,
) -> dict[str, object]:
    """Return checks, grouped in sections, as the dict the report writer takes.

    This is the schema :func:`gradcheck._report.write_report` documents;
    campaigns, the pytest plugin and ``gradcheck check`` all build it here.

    Args:
        title: the report's title.
        derivation: what was checked, in words or as ``module:function``.
        sections: ``(name, description, checks)`` per section, in order.
        seed: the seed of generated checks, when there is one.
        count: generated architectures requested, for campaigns.
        interrupted: whether the run was cut short.
        started: when the run started, as an ISO timestamp.
        duration_s: wall time of the run.
        shrunk: the smallest failing generated check, for campaigns.

    Returns:
        The campaign dict, with counts per verdict (``not-differentiable``
        only when some check got it) and the largest
        discrepancy per quantity kind over every check.
    """
    checks = [c for _, _, section in sections for c in section]
    counts = {"checks": len(checks)}
    for verdict in Verdict:
        counts[verdict.value] = sum(c.verdict is verdict for c in checks)
    # Only general gradients at a kink get this verdict; the delta rule is
    # smooth, and its summaries keep their three counts.
    if not counts[Verdict.NOT_DIFFERENTIABLE.value]:
        del counts[Verdict.NOT_DIFFERENTIABLE.value]
    return {
        "title": title,
        "derivation": derivation,
        "seed": seed,
        "count": count,
        "interrupted": interrupted,
        "started": started,
        "duration_s": duration_s,
        "counts": counts,
        "largest_discrepancies": _largest_discrepancies(checks),
        "sections": [
            {
                "name": name,
                "description": description,
                "checks": [c.to_dict() for c in section],
            }
            for name, description, section in sections
        ],
        "shrunk": (
            None
            if shrunk is None
            else {
                "description": "the smallest failing network Hypothesis found",
                "check": shrunk.to_dict(),
            }
        ),
        "environment": _versions(),
        "settings": {
            "safety_factor": SAFETY_FACTOR,
            "rounding_factor": ROUNDING_FACTOR,
            "rel_step": f"cbrt(eps) = {EPS ** (1 / 3):.3g}",
        },
    }


def summarise(campaign: Campaign) -> dict[str, object]:
    """Return the campaign as the plain dict that the report writer takes."""
    return summarise_checks(
        "Delta rule campaign",
        campaign.derivation,
        [
            (name, campaign.descriptions.get(name, ""), section)
            for name, section in campaign.sections.items()
        ],
        seed=campaign.seed,
        count=campaign.count,
        interrupted=campaign.interrupted,
        started=campaign.started,
        duration_s=campaign.duration_s,
        shrunk=campaign.shrunk,
    )
