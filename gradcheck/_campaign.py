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
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata

from hypothesis import HealthCheck, Phase, given, seed, settings

from gradcheck._check import Derivation, compare_delta_rule
from gradcheck._compare import SAFETY_FACTOR, Verdict
from gradcheck._delta_rule import QUANTITY_KINDS, delta_rule
from gradcheck._digits import DIGITS_NETWORK, train_on_digits
from gradcheck._numeric import EPS, ROUNDING_FACTOR
from gradcheck._result import CheckResult
from gradcheck.errors import GradientMismatchError, InvalidArgumentError
from gradcheck.strategies import DeltaRuleCase, delta_rule_cases

__all__ = ["Campaign", "run_campaign", "summarise"]

logger = logging.getLogger(__name__)


GENERATED = "Generated architectures"
DIGITS = "Real data: scikit-learn digits"

# Checks spent on shrinking a failure; each costs a compile for a new shape.
SHRINK_BUDGET = 150

OnResult = Callable[[CheckResult], None]


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


def _run_generated(
    campaign: Campaign, derivation: Derivation, on_result: OnResult
) -> None:
    if not campaign.count:
        return
    results = campaign.sections.setdefault(GENERATED, [])

    @seed(campaign.seed)
    @_hypothesis_settings(campaign.count, [Phase.generate])
    @given(delta_rule_cases())
    def explore(case: DeltaRuleCase) -> None:
        # Hypothesis may offer more examples than asked for; stop at count.
        if len(results) >= campaign.count:
            return
        number = len(results)
        result = compare_delta_rule(
            *case.args,
            derivation=derivation,
            label=f"generated #{number}",
            reproduce=f"--seed {campaign.seed}, example #{number}",
        )
        result.details["weight_scale"] = float(f"{case.weight_scale:.3g}")
        results.append(result)
        on_result(result)

    explore()


def _shrink_failure(campaign: Campaign, derivation: Derivation) -> CheckResult | None:
    """Let Hypothesis shrink a failing generated case to the smallest network.

    Failing is made to raise, so Hypothesis searches and then shrinks. After
    ``SHRINK_BUDGET`` checks every example counts as passing, which ends
    the shrink with the smallest failure found so far.
    """
    calls = 0
    smallest: list[CheckResult] = []

    @seed(campaign.seed)
    @_hypothesis_settings(campaign.count, [Phase.generate, Phase.shrink])
    @given(delta_rule_cases())
    def search(case: DeltaRuleCase) -> None:
        nonlocal calls
        calls += 1
        if calls > SHRINK_BUDGET:
            return
        result = compare_delta_rule(
            *case.args, derivation=derivation, label="smallest failing network"
        )
        if result.verdict is Verdict.FAIL:
            result.details["weight_scale"] = float(f"{case.weight_scale:.3g}")
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
        result = compare_delta_rule(
            DIGITS_NETWORK,
            checkpoint.params,
            checkpoint.x,
            checkpoint.d,
            0.1,
            derivation=derivation,
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
    derivation_name: str = "gradcheck.delta_rule (built-in)",
    digits_epochs: int | None = 60,
    shrink: bool = True,
    on_result: OnResult | None = None,
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

    Returns:
        The :class:`Campaign`; ``interrupted`` is set if it was cut short.
    """
    count = _check_count(count)
    on_result = on_result or (lambda result: None)
    campaign = Campaign(derivation=derivation_name, count=count, seed=int(seed_))
    campaign.started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if count:
        campaign.descriptions[GENERATED] = (
            f"{count} architectures drawn by Hypothesis from seed {seed_}: 0 to "
            "4 hidden layers of 1 to 8 units, random skip connections, bias on "
            "or off, weights from 1e-3 to saturating scales, batches of 1 to 8."
        )
    if digits_epochs is not None:
        campaign.descriptions[DIGITS] = (
            f"A {DIGITS_NETWORK.describe()} network trained for {digits_epochs} "
            "epochs on scikit-learn's 8x8 digits with the document's update rule "
            "(mini-batches of 32, eta 0.1), checked on 48 held-out images at "
            "initialisation, after one epoch, midway and at the end, where many "
            "units have saturated."
        )
    start = time.perf_counter()
    try:
        _run_generated(campaign, derivation, on_result)
        if digits_epochs is not None:
            _run_digits(campaign, derivation, digits_epochs, on_result)
        failed = any(
            c.verdict is Verdict.FAIL for c in campaign.sections.get(GENERATED, [])
        )
        if shrink and failed:
            logger.info("shrinking the first failure")
            campaign.shrunk = _shrink_failure(campaign, derivation)
    except KeyboardInterrupt:
        logger.warning("interrupted: keeping the partial results")
        campaign.interrupted = True
    campaign.duration_s = round(time.perf_counter() - start, 2)
    return campaign


def _largest_discrepancies(checks: list[CheckResult]) -> list[dict[str, object]]:
    rows = []
    for kind in QUANTITY_KINDS:
        found = [(c, q) for c in checks for q in c.quantities if q.kind == kind]
        if not found:
            continue
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
    return rows


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("numpy", "jax", "hypothesis", "gradcheck"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def summarise(campaign: Campaign) -> dict[str, object]:
    """Return the campaign as the plain dict that the report writer takes."""
    checks = campaign.checks
    counts = {"checks": len(checks)}
    for verdict in Verdict:
        counts[verdict.value] = sum(c.verdict is verdict for c in checks)
    return {
        "title": "Delta rule campaign",
        "derivation": campaign.derivation,
        "seed": campaign.seed,
        "count": campaign.count,
        "interrupted": campaign.interrupted,
        "started": campaign.started,
        "duration_s": campaign.duration_s,
        "counts": counts,
        "largest_discrepancies": _largest_discrepancies(checks),
        "sections": [
            {
                "name": name,
                "description": campaign.descriptions.get(name, ""),
                "checks": [c.to_dict() for c in section],
            }
            for name, section in campaign.sections.items()
        ],
        "shrunk": (
            None
            if campaign.shrunk is None
            else {
                "description": "the smallest failing network Hypothesis found",
                "check": campaign.shrunk.to_dict(),
            }
        ),
        "environment": _versions(),
        "settings": {
            "safety_factor": SAFETY_FACTOR,
            "rounding_factor": ROUNDING_FACTOR,
            "rel_step": f"cbrt(eps) = {EPS ** (1 / 3):.3g}",
        },
    }
