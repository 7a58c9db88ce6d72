# SPDX-License-Identifier: MIT
"""Measure gradcheck's power: every mutant on generated points.

For each generated point (an architecture with its weights, inputs,
targets and eta; or a point of a gradient model), the references are
computed once and shared by the right derivation and every mutant. Each
mutant then gets one of five outcomes there:

* ``detected``: its check failed;
* ``equivalent``: every quantity it returns equals the right derivation's
  to rounding (the band without the finite-difference part), so nothing
  can tell them apart on this point;
* ``below band``: it differs from the right derivation by more than
  rounding but nowhere by more than the acceptance band, so the checker
  cannot be expected to see it;
* ``unsettled``: it differs beyond the band only on entries where the two
  references disagree (the checker rightly declines to judge there);
* ``missed``: it differs beyond the band on entries where the references
  agree, and the check did not fail. This is a defect of the checker.

Equivalence is decided by running the comparison itself with the right
derivation's values standing in for autodiff: the same bands, computed by
the same code, never assumed from the architecture.

A second measurement, :func:`examples_to_catch`, counts how many examples
Hypothesis draws before a mutant's check first fails, with and without
``hypothesis.target`` steering the search toward the largest band ratio.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import jax
import numpy as np
from hypothesis import HealthCheck, Phase, given, seed, settings, target
from hypothesis import strategies as st

from gradcheck import strategies as gst
from gradcheck._check import compare_delta_rule
from gradcheck._compare import Reference, Verdict
from gradcheck._delta_rule import delta_rule, quantity_names
from gradcheck._gradient import compare_gradient, gradient_references
from gradcheck._networks import (
    Network,
    bias_name,
    check_data,
    check_params,
    weight_name,
)
from gradcheck._numeric import NumericEstimate
from gradcheck._references import compute_references
from gradcheck._result import CheckResult
from gradcheck.errors import DerivationError, InvalidArgumentError
from gradcheck.mutants import DELTA_RULE, GradientModel, Mutant, catalogue
from gradcheck.strategies import DeltaRuleCase, _signed_arrays, delta_rule_cases

__all__ = [
    "OUTCOMES",
    "MutationCampaign",
    "Outcome",
    "evaluate_mutant",
    "evaluate_point",
    "examples_to_catch",
    "run_mutation_campaign",
    "summarise_mutations",
]

logger = logging.getLogger(__name__)

OUTCOMES = ("detected", "equivalent", "below band", "unsettled", "missed")

# What a check whose derivation raised names as its first wrong quantity.
RAISED = "(the derivation raised)"

# Draws Hypothesis may make per distinct architecture wanted.
DRAWS_PER_ARCHITECTURE = 20

# The search for examples to catch draws its own architectures, smaller
# than the campaign's (a mistake that shows only on some, behind a skip
# from a hidden layer or a bias, has to be found), with batches of 1 or 2.
SEARCH_MAX_HIDDEN = 3
SEARCH_MAX_WIDTH = 4
SEARCH_MAX_BATCH = 2

# Examples per round of a search (see examples_to_catch).
SEARCH_ROUND = 20


@dataclass
class Outcome:
    """One mutant at one point.

    Attributes:
        mutant: the mutant's name.
        label: the point, for example ``generated #3``.
        subject: the architecture or model point, in words.
        outcome: one of :data:`OUTCOMES`.
        first_wrong: the quantity the check named first, if it failed.
        expected: the quantity the mutation touches on this point.
        localised: whether ``first_wrong == expected`` (detected only).
        why_not: why another quantity was named first, in words.
        band_ratio: the largest ``|mutant - right| / band`` over entries.
    """

    mutant: str
    label: str
    subject: str
    outcome: str
    first_wrong: str | None = None
    expected: str | None = None
    localised: bool | None = None
    why_not: str = ""
    band_ratio: float = 0.0


@dataclass
class MutationCampaign:
    """Every outcome of a mutation campaign, possibly cut short."""

    count: int
    seed: int
    gradient_count: int
    mutants: list[Mutant]
    outcomes: list[Outcome] = field(default_factory=list)
    right: list[CheckResult] = field(default_factory=list)
    search: dict[str, dict[str, list[int | None]]] = field(default_factory=dict)
    search_seeds: tuple[int, ...] = ()
    search_budget: int = 0
    search_networks: tuple[Network, ...] | None = None
    interrupted: bool = False
    started: str = ""
    duration_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# One point


@dataclass
class _Point:
    """A generated point and how to check a derivation there."""

    label: str
    subject: str
    network: Network | None
    check: Callable[[Callable[..., object], object], CheckResult]
    band_references: object
    rounding_references: object
    order: tuple[str, ...]


def _delta_rule_point(args: tuple, label: str) -> _Point:
    network, params, x, d, eta = args
    params = check_params(network, params)
    x, d = check_data(network, x, d)
    references = compute_references(network, params, x, d, eta)
    right = delta_rule(network, params, x, d, eta)

    # The right derivation's values stand in for autodiff. The numeric
    # value moves with them, so that the references disagree exactly where
    # they disagree in the real check.
    band, rounding = {}, {}
    for name, ref in references.items():
        value = np.asarray(right[name], dtype=np.float64)
        numeric = ref.numeric
        band[name] = Reference(
            NumericEstimate(
                numeric.value - ref.autodiff + value, numeric.error, numeric.step
            ),
            value,
            ref.rounding,
        )
        rounding[name] = Reference(
            NumericEstimate(value, np.zeros_like(value), numeric.step),
            value,
            ref.rounding,
        )

    def check(derivation, refs=references):
        return compare_delta_rule(
            network, params, x, d, eta, derivation=derivation, references=refs
        )

    return _Point(
        label,
        network.describe(),
        network,
        check,
        band,
        rounding,
        tuple(quantity_names(network)),
    )


def _flat(model: GradientModel, returned: object, probes: dict) -> np.ndarray:
    grads, probe_values = returned
    leaves = jax.tree_util.tree_leaves(grads)
    parts = [np.ravel(np.asarray(a, dtype=np.float64)) for a in leaves]
    parts += [np.ravel(np.asarray(probe_values[n], dtype=np.float64)) for n in probes]
    return np.concatenate(parts)


def _gradient_point(model: GradientModel, case: object, label: str) -> _Point:
    params, data, probes = case.params, case.data, case.probes
    batch = len(data[0])
    references = gradient_references(model.loss, params, *data, probes=probes)
    numeric, autodiff = references.numeric, references.autodiff
    if autodiff is None:
        raise InvalidArgumentError(
            f"the loss of the model {model.name!r} cannot be traced by JAX "
            f"({references.why_not}); mutants need the autodiff reference",
            name="model",
            value=model.name,
        )
    right = _flat(model, model.grad(params, *data), probes)
    band = dataclasses.replace(
        references,
        numeric=NumericEstimate(
            numeric.value - autodiff + right, numeric.error, numeric.step
        ),
        autodiff=right,
    )
    exact = dataclasses.replace(
        references,
        numeric=NumericEstimate(right, np.zeros_like(right), numeric.step),
        autodiff=right,
    )

    def check(derivation, refs=references):
        return compare_gradient(
            model.loss,
            derivation,
            params,
            *data,
            probes=probes,
            batch_size=batch,
            references=refs,
        )

    return _Point(label, case.describe(), None, check, band, exact, model.quantities)


# ---------------------------------------------------------------------------
# One mutant at one point


def _run(point: _Point, derivation: Callable[..., object], refs=None) -> CheckResult:
    if refs is None:
        return point.check(derivation)
    return point.check(derivation, refs)


def _explain(
    point: _Point, expected: str | None, first: str | None, band: CheckResult | None
) -> str:
    """Say why the check named ``first`` rather than ``expected``."""
    if first == RAISED:
        return "the derivation raised, so no quantity could be named"
    if expected is None:
        return "the mutation has no step of its own on this architecture"
    order = point.order
    if band is not None:
        try:
            touched = band.quantity(expected)
        except KeyError:
            touched = None
        if touched is not None and touched.n_mismatched == 0:
            return (
                f"{expected} moved by at most {touched.max_band_ratio:.2g} of its "
                f"band here, too little to see; {first} is the first quantity the "
                "mistake carries beyond the band"
            )
    if (
        first in order
        and expected in order
        and order.index(first) < order.index(expected)
    ):
        return (
            f"{first} comes before {expected} in the document's order and the "
            "mutation changes it too"
        )
    return f"{expected} is off beyond its band only where the references disagree"


def evaluate_mutant(point: _Point, mutant: Mutant) -> Outcome:
    """Classify one mutant at one point (see the module docstring)."""
    expected = mutant.expected_first(point.network)
    outcome = Outcome(mutant.name, point.label, point.subject, "", expected=expected)
    try:
        real = _run(point, mutant.derivation)
    except DerivationError as err:
        logger.debug("mutant %s raised on %s: %s", mutant.name, point.subject, err)
        outcome.outcome, outcome.first_wrong = "detected", RAISED
        outcome.localised = False
        outcome.why_not = _explain(point, expected, RAISED, None)
        outcome.band_ratio = math.inf
        return outcome

    band = _run(point, mutant.derivation, point.band_references)
    ratio = max((q.max_band_ratio for q in band.quantities), default=0.0)
    outcome.band_ratio = float(ratio)
    if real.verdict is Verdict.FAIL:
        outcome.outcome = "detected"
        outcome.first_wrong = real.first_wrong
        outcome.localised = real.first_wrong == expected
        if not outcome.localised:
            outcome.why_not = _explain(point, expected, real.first_wrong, band)
        return outcome

    exact = _run(point, mutant.derivation, point.rounding_references)
    if all(q.max_band_ratio <= 1.0 for q in exact.quantities):
        outcome.outcome = "equivalent"
    elif any(q.n_mismatched for q in band.quantities):
        outcome.outcome = "missed"
    elif ratio > 1.0:
        outcome.outcome = "unsettled"
    else:
        outcome.outcome = "below band"
    return outcome


def evaluate_point(point: _Point, mutants: Sequence[Mutant], right) -> tuple:
    """Check the right derivation and every mutant at one point."""
    right_result = _run(point, right)
    return right_result, [evaluate_mutant(point, m) for m in mutants]


# ---------------------------------------------------------------------------
# Generated points


class _Enough(BaseException):
    """Ends a Hypothesis run from inside: enough was seen."""


def _settings(max_examples: int, phases: list[Phase]) -> settings:
    return settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


def _generated_delta_points(count: int, seed_: int):
    """Yield points on ``count`` distinct architectures, as Hypothesis draws them."""
    cases = []
    seen: set[Network] = set()

    @seed(seed_)
    @_settings(DRAWS_PER_ARCHITECTURE * max(count, 1), [Phase.generate])
    @given(delta_rule_cases())
    def draw(case):
        if case.network in seen:
            return
        seen.add(case.network)
        cases.append(case)
        if len(cases) >= count:
            raise _Enough

    with contextlib.suppress(_Enough):
        draw()
    for number, case in enumerate(cases):
        yield _delta_rule_point(case.args, f"generated #{number}")


def _generated_model_points(model: GradientModel, count: int, seed_: int):
    # Like architectures, one point per distinct shape: Hypothesis's first
    # draws are its simplest (equal weights everywhere), which hide
    # mistakes, and a new shape comes with new values.
    cases = []
    seen: set[str] = set()

    @seed(seed_)
    @_settings(DRAWS_PER_ARCHITECTURE * max(count, 1), [Phase.generate])
    @given(model.cases)
    def draw(case):
        if case.describe() in seen:
            return
        seen.add(case.describe())
        cases.append(case)
        if len(cases) >= count:
            raise _Enough

    with contextlib.suppress(_Enough):
        draw()
    for number, case in enumerate(cases):
        yield _gradient_point(model, case, f"{model.name} #{number}")


# ---------------------------------------------------------------------------
# Examples to catch


def _score(result: CheckResult) -> float:
    """log10 of the largest band ratio: what targeting pushes up."""
    ratio = max((q.max_band_ratio for q in result.quantities), default=0.0)
    if not math.isfinite(ratio):
        return 300.0
    return math.log10(max(ratio, 1e-300))


def _saturation(case: DeltaRuleCase) -> float:
    """The largest net input in the forward pass: how saturated units are.

    A mistake that only shows in saturated units leaves the band ratio at
    exactly 0 everywhere else, which gives targeting nothing to climb; this
    second target leads the search into that corner whatever the mutant.
    """
    _, y_and_s = _forward_net_inputs(case)
    return float(max(np.max(np.abs(s)) for s in y_and_s))


def _forward_net_inputs(case: DeltaRuleCase) -> tuple[None, list[np.ndarray]]:
    network, params = case.network, case.params
    y = {0: case.x}
    net_inputs = []
    for v in range(1, network.n_layers):
        s = sum(y[u] @ params[weight_name(u, v)] for u in network.predecessors(v))
        if network.bias:
            s = s + params[bias_name(v)]
        net_inputs.append(s)
        y[v] = 1.0 / (1.0 + np.exp(-np.clip(s, -700.0, 700.0)))
    return None, net_inputs


@st.composite
def _search_cases(
    draw: st.DrawFn, networks: tuple[Network, ...] | None, max_batch: int
) -> DeltaRuleCase:
    """Cases as :func:`delta_rule_cases` draws them, with the scale drawn last.

    Hypothesis's optimiser climbs from the last choice of a case backward,
    a few steps per choice; drawing the weight scale last makes it the
    first thing targeting moves, which is the way into saturation.
    """
    if networks is None:
        architectures = gst.networks(SEARCH_MAX_HIDDEN, SEARCH_MAX_WIDTH)
    else:
        architectures = st.sampled_from(networks)
    network = draw(architectures, label="network")
    batch = draw(st.integers(1, max_batch), label="batch size")
    eta = draw(st.sampled_from([0.1, 0.5, 1.0, 0.01]), label="eta")
    x = draw(gst.inputs(batch, network.sizes[0]), label="inputs x")
    d = draw(gst.targets(batch, network.sizes[-1]), label="targets d")
    unit = {
        name: draw(_signed_arrays(shape, 1.0), label=name)
        for name, shape in network.param_shapes().items()
    }
    scale = 10.0 ** draw(st.floats(-3.0, 1.5), label="log10 weight scale")
    params = {name: scale * value for name, value in unit.items()}
    return DeltaRuleCase(network, params, x, d, eta, scale)


def examples_to_catch(
    mutant: Mutant,
    seed_: int,
    budget: int,
    targeted: bool,
    networks: Sequence[Network] | None = None,
    max_batch: int = SEARCH_MAX_BATCH,
) -> int | None:
    """Return how many examples Hypothesis draws before the mutant fails a check.

    Delta-rule mutants are searched on generated architectures of up to
    ``SEARCH_MAX_HIDDEN`` hidden layers of up to ``SEARCH_MAX_WIDTH`` units
    (or on ``networks`` when given), with weights, inputs, targets and eta
    drawn as in :func:`delta_rule_cases` and batches of 1 to ``max_batch``;
    gradient mutants on their model's points. With ``targeted``, every
    example reports ``log10`` of its largest ``|analytic - autodiff| / band``
    to :func:`hypothesis.target`, and for the delta rule also its largest
    net input (see :func:`_saturation`). The search goes in rounds of
    ``SEARCH_ROUND`` examples, and Hypothesis optimises only in the second
    half of a round, so targeting can only change the count of a mutant
    that survives the first 10 examples of some round.

    Returns:
        The number of examples up to and including the first failing one,
        or ``None`` when none failed within ``budget``.
    """
    if isinstance(mutant.model, GradientModel):
        model = mutant.model
        strategy = model.cases

        def make_point(case):
            return _gradient_point(model, case, "search")

    else:
        strategy = _search_cases(
            None if networks is None else tuple(networks), max_batch
        )

        def make_point(case):
            return _delta_rule_point(case.args, "search")

    calls = 0
    phases = [Phase.generate, Phase.target] if targeted else [Phase.generate]

    def search(case):
        nonlocal calls
        calls += 1
        point = make_point(case)
        try:
            result = point.check(mutant.derivation)
        except DerivationError:
            raise _Enough from None
        if result.verdict is Verdict.FAIL:
            raise _Enough
        if targeted:
            # Saturation first: Hypothesis optimises the labels in the order
            # it first saw them, and the band ratio of a mutant that is
            # right here is rounding noise, a poor direction to climb.
            if isinstance(case, DeltaRuleCase):
                target(_saturation(case), label="largest |s|")
            target(_score(result), label="log10 band ratio")

    # Rounds of at most SEARCH_ROUND examples, each from its own seed: in
    # a run of n < 1000 examples Hypothesis starts its one optimisation
    # pass only after n // 2 (at least 10), so short rounds let targeting
    # begin after 10 examples rather than after half the whole budget.
    for round_ in range(math.ceil(budget / SEARCH_ROUND)):
        size = min(SEARCH_ROUND, budget - calls)
        if size <= 0:
            break
        run = seed(seed_ * 1000 + round_)(
            _settings(size, phases)(given(strategy)(search))
        )
        try:
            run()
        except _Enough:
            return calls
    return None


# ---------------------------------------------------------------------------
# The campaign


def run_mutation_campaign(
    count: int = 100,
    seed_: int = 0,
    mutants: Sequence[Mutant] | None = None,
    gradient_count: int = 6,
    search_seeds: Sequence[int] = (0, 1, 2, 3, 4),
    search_budget: int = 60,
    on_progress: Callable[[str], None] | None = None,
    search_networks: Sequence[Network] | None = None,
) -> MutationCampaign:
    """Run every mutant on generated points; keep partial results on Ctrl-C.

    Args:
        count: distinct generated architectures for delta-rule mutants.
        seed_: the Hypothesis seed of the generated points.
        mutants: the mutants to run; the whole catalogue by default.
        gradient_count: generated points per gradient model.
        search_seeds: seeds of the search for examples to catch; empty
            skips the search.
        search_budget: examples per search run.
        search_networks: the architectures of the search; generated ones
            when omitted.
        on_progress: called with a short message after each point.

    Returns:
        The :class:`MutationCampaign`.
    """
    for value, what in ((count, "count"), (gradient_count, "gradient_count")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgumentError(
                f"{what} must be a non-negative int, got {what}={value!r}",
                name=what,
                value=value,
            )
    if isinstance(search_budget, bool) or not isinstance(search_budget, int):
        raise InvalidArgumentError(
            f"search_budget must be a positive int, got {search_budget!r}",
            name="search_budget",
            value=search_budget,
        )
    if search_budget < 1:
        raise InvalidArgumentError(
            f"search_budget must be a positive int, got {search_budget!r}",
            name="search_budget",
            value=search_budget,
        )
    mutants = list(catalogue() if mutants is None else mutants)
    progress = on_progress or (lambda message: None)
    campaign = MutationCampaign(
        count=count,
        seed=int(seed_),
        gradient_count=gradient_count,
        mutants=mutants,
        search_seeds=tuple(search_seeds),
        search_budget=search_budget,
        search_networks=None if search_networks is None else tuple(search_networks),
    )
    campaign.started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    start = time.perf_counter()
    try:
        delta = [m for m in mutants if m.model == DELTA_RULE]
        if delta:
            for point in _generated_delta_points(count, seed_):
                right, outcomes = evaluate_point(point, delta, delta_rule)
                right = _labelled(right, point.label)
                campaign.right.append(right)
                campaign.outcomes += outcomes
                progress(f"{point.label}: {point.subject}")
        models = []
        for m in mutants:
            if isinstance(m.model, GradientModel) and not any(
                m.model is k for k in models
            ):
                models.append(m.model)
        for model in models:
            mine = [m for m in mutants if m.model is model]
            for point in _generated_model_points(model, gradient_count, seed_):
                right, outcomes = evaluate_point(point, mine, model.grad)
                campaign.right.append(_labelled(right, point.label))
                campaign.outcomes += outcomes
                progress(f"{point.label}: {point.subject}")
        campaign.timings["matrix_s"] = round(time.perf_counter() - start, 2)

        search_start = time.perf_counter()
        for mutant in mutants if campaign.search_seeds else ():
            runs: dict[str, list[int | None]] = {"untargeted": [], "targeted": []}
            campaign.search[mutant.name] = runs
            for s in campaign.search_seeds:
                for mode in ("untargeted", "targeted"):
                    runs[mode].append(
                        examples_to_catch(
                            mutant,
                            s,
                            search_budget,
                            mode == "targeted",
                            networks=search_networks,
                        )
                    )
            progress(f"search: {mutant.name}")
        campaign.timings["search_s"] = round(time.perf_counter() - search_start, 2)
    except KeyboardInterrupt:
        logger.warning("interrupted: keeping the partial results")
        campaign.interrupted = True
    campaign.duration_s = round(time.perf_counter() - start, 2)
    return campaign


def _labelled(result: CheckResult, label: str) -> CheckResult:
    return dataclasses.replace(result, label=label)


# ---------------------------------------------------------------------------
# Summary


def _median(values: Sequence[int | None]) -> float | None:
    """Median examples to catch; a run that never caught counts as past budget.

    ``None`` when at least half the runs never caught it.
    """
    if not values:
        return None
    caught = sorted(v if v is not None else math.inf for v in values)
    middle = statistics.median(caught)
    return None if math.isinf(middle) else float(middle)


def summarise_mutations(campaign: MutationCampaign) -> dict[str, object]:
    """Return the campaign as a plain, JSON-ready dict (the report's input)."""
    rows = []
    by_mutant = collections.defaultdict(list)
    for o in campaign.outcomes:
        by_mutant[o.mutant].append(o)
    n_detected = n_localised = 0
    for mutant in campaign.mutants:
        outcomes = by_mutant.get(mutant.name, [])
        counts = {k: sum(o.outcome == k for o in outcomes) for k in OUTCOMES}
        detected = [o for o in outcomes if o.outcome == "detected"]
        firsts = collections.Counter(o.first_wrong for o in detected)
        localised = sum(bool(o.localised) for o in detected)
        n_detected += len(detected)
        n_localised += localised
        reasons = collections.Counter(o.why_not for o in detected if o.why_not)
        search = campaign.search.get(mutant.name)
        rows.append(
            {
                "name": mutant.name,
                "description": mutant.description,
                "model": mutant.model_name,
                "touches": mutant.touches,
                "builtin": mutant.builtin,
                "counts": counts,
                "first_wrong": detected[0].first_wrong if detected else None,
                "first_expected": detected[0].expected if detected else None,
                "first_is_touched": detected[0].localised if detected else None,
                "first_wrong_counts": dict(firsts.most_common()),
                "localised": localised,
                "localisation_rate": localised / len(detected) if detected else None,
                "why_not": [
                    {"reason": r, "count": n} for r, n in reasons.most_common(3)
                ],
                "missed_at": [
                    {"label": o.label, "architecture": o.subject, "ratio": o.band_ratio}
                    for o in outcomes
                    if o.outcome == "missed"
                ],
                "search": None
                if search is None
                else {
                    "untargeted": search["untargeted"],
                    "targeted": search["targeted"],
                    "median_untargeted": _median(search["untargeted"]),
                    "median_targeted": _median(search["targeted"]),
                },
            }
        )
    right_counts = collections.Counter(str(r.verdict) for r in campaign.right)
    right_failed = [
        {"label": r.label, "architecture": r.subject, "first_wrong": r.first_wrong}
        for r in campaign.right
        if r.verdict is Verdict.FAIL
    ]
    missed = sum(row["counts"]["missed"] for row in rows)
    return {
        "title": "Mutation campaign: the checker's own power",
        "seed": campaign.seed,
        "count": campaign.count,
        "gradient_count": campaign.gradient_count,
        "search_seeds": list(campaign.search_seeds),
        "search_budget": campaign.search_budget,
        "search_round": SEARCH_ROUND,
        "search_networks": (
            f"generated with up to {SEARCH_MAX_HIDDEN} hidden layers of up to "
            f"{SEARCH_MAX_WIDTH} units, random skip connections and bias on or off"
            if campaign.search_networks is None
            else "from the list "
            + ", ".join(n.describe() for n in campaign.search_networks)
        ),
        "started": campaign.started,
        "duration_s": campaign.duration_s,
        "timings": campaign.timings,
        "interrupted": campaign.interrupted,
        "outcomes": list(OUTCOMES),
        "mutants": rows,
        "right": {
            "checks": len(campaign.right),
            "counts": {
                k: right_counts.get(k, 0) for k in ("pass", "fail", "inconclusive")
            },
            "failed": right_failed,
        },
        "totals": {
            **{k: sum(row["counts"][k] for row in rows) for k in OUTCOMES},
            "localised": n_localised,
            "localisation_rate": n_localised / n_detected if n_detected else None,
        },
        "passed": missed == 0 and not right_failed,
    }
