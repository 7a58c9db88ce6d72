# SPDX-License-Identifier: MIT
"""Directional screening with drill-down: compare_delta_rule(method="screen")."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_references import _draw_case

from gradcheck import (
    Network,
    Verdict,
    compare_delta_rule,
    delta_rule,
    init_params,
    mutants,
)
from gradcheck._screen import MISS_SIZES
from gradcheck.errors import InvalidArgumentError, InvalidTypeError

DATA = Path(__file__).parent / "data"
NETWORK = Network((5, 9, 9, 3), skips=((1, 3),), bias=True)
NO_BIAS = Network((4, 6, 3, 2), skips=((0, 2), (0, 3)), bias=False)


def _case(network=NETWORK, batch=4, seed=2):
    return (network, *_draw_case(network, batch, seed))


@pytest.mark.parametrize(("network", "batch"), [(NETWORK, 4), (NO_BIAS, 1)])
def test_screen_passes_a_right_derivation_and_states_its_miss_probability(
    network, batch
):
    case = _case(network, batch)

    result = compare_delta_rule(*case, 0.5, method="screen", directions=3, seed=1)

    assert result.verdict is Verdict.PASS
    screen = result.details["screen"]
    assert screen["directions"] == 3
    assert screen["seed"] == 1
    assert screen["checked_in_full"] == []
    for name, facts in screen["quantities"].items():
        assert facts["screened"]
        assert facts["directions"] == 3
        assert 0 < facts["relative_band"] < 1e-4, name
        miss = facts["miss_probability"]
        assert list(miss) == [f"{size:g}" for size in MISS_SIZES]
        assert miss["0.01"] < miss["0.0001"] < miss["1e-06"] <= 1.0
        # Three directions of a tensor of six entries (theta[1] of a batch
        # of one) already make an error of 1% all but impossible to miss.
        assert miss["0.01"] < 1e-8, name
        assert facts["verdict"] == "pass", name
    # Strict JSON, though directions past the first have no finite
    # difference (NaN) in the worst entries; and a copy of the details.
    record = result.to_dict()
    json.dumps(record, allow_nan=False)
    record["details"]["screen"]["seed"] = 99
    assert screen["seed"] == 1


def test_screen_is_repeatable_and_follows_its_seed():
    case = _case()

    first = compare_delta_rule(*case, 0.5, method="screen", seed=0)
    again = compare_delta_rule(*case, 0.5, method="screen", seed=0)
    other = compare_delta_rule(*case, 0.5, method="screen", seed=1)

    band = first.details["screen"]["quantities"]["dE/dW[0->1]"]["relative_band"]
    assert again.details == first.details
    assert other.details["screen"]["quantities"]["dE/dW[0->1]"]["relative_band"] != (
        band
    )


# Mistakes at the output, in a hidden layer, in a skip's successors, in a
# bias gradient and in an update.
MUTANTS = [
    "output-slope-missing",
    "hidden-sum-transposed",
    "skip-successors-missing",
    "bias-gradient-averaged",
    "eta-twice",
]


@pytest.mark.parametrize("name", MUTANTS)
def test_screen_drills_down_to_the_first_wrong_quantity(name):
    case = _case()
    mutant = mutants.get(name)

    full = compare_delta_rule(*case, 0.5, mutant.derivation)
    screen = compare_delta_rule(*case, 0.5, mutant.derivation, method="screen")

    assert screen.verdict is Verdict.FAIL
    assert screen.first_wrong == full.first_wrong == mutant.expected_first(case[0])
    drilled = screen.details["screen"]["checked_in_full"]
    assert screen.first_wrong in drilled
    # The drilled-down quantity is the full check's, entries and all, up
    # to the rounding of shifted losses evaluated in other chunks.
    drilled_down, checked = (
        screen.quantity(screen.first_wrong),
        full.quantity(full.first_wrong),
    )
    assert drilled_down.n_mismatched == checked.n_mismatched
    assert [w.name for w in drilled_down.worst] == [w.name for w in checked.worst]
    for ours, theirs in zip(drilled_down.worst, checked.worst, strict=True):
        assert ours.analytic == theirs.analytic
        assert abs(ours.numeric - theirs.numeric) <= 0.25 * theirs.band


def test_screen_finds_one_wrong_entry_among_many_right_ones():
    network, params, x, d = _case(Network((12, 30, 2), bias=True))

    def one_entry_off(network, params, x, d, eta):
        q = delta_rule(network, params, x, d, eta)
        q["dE/dW[0->1]"] = q["dE/dW[0->1]"].copy()
        q["dE/dW[0->1]"][3, 7] += 1e-3 * np.abs(q["dE/dW[0->1]"]).max()
        return q

    result = compare_delta_rule(
        network, params, x, d, 0.5, one_entry_off, method="screen", directions=2
    )

    assert result.verdict is Verdict.FAIL
    assert result.first_wrong == "dE/dW[0->1]"
    screen = result.details["screen"]
    assert screen["checked_in_full"] == ["dE/dW[0->1]"]
    assert screen["quantities"]["dE/dW[0->1]"]["verdict"] == "fail"
    assert screen["quantities"]["dE/dW[1->2]"]["verdict"] == "pass"
    worst = result.quantity("dE/dW[0->1]").worst[0]
    assert worst.name == "dE/dW[0->1][3,7]"


def test_screen_checks_a_misshapen_quantity_in_full():
    case = _case()

    def transposed(network, params, x, d, eta):
        q = delta_rule(network, params, x, d, eta)
        q["dE/dW[1->2]"] = q["dE/dW[1->2]"][:, :-1]
        return q

    result = compare_delta_rule(*case, 0.5, transposed, method="screen")

    assert result.verdict is Verdict.FAIL
    assert result.first_wrong == "dE/dW[1->2]"
    assert "shape" in result.quantity("dE/dW[1->2]").note


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"method": "fast"},
            InvalidArgumentError,
            r"method must be one of \('full', 'screen'\), got method='fast'",
        ),
        (
            {"method": None},
            InvalidTypeError,
            r"method must be a str, one of \('full', 'screen'\), got method=None",
        ),
        (
            {"method": np.array(["screen", "full"])},
            InvalidTypeError,
            r"method must be a str, one of \('full', 'screen'\), got method=array",
        ),
        (
            {"directions": 4},
            InvalidArgumentError,
            r"directions apply to method='screen' only, got directions=4",
        ),
        (
            {"method": "screen", "directions": 0},
            InvalidArgumentError,
            r"directions must be at least 1, got directions=0",
        ),
        (
            {"method": "screen", "directions": 2.0},
            InvalidTypeError,
            r"directions must be an int, got directions=2.0",
        ),
        (
            {"method": "screen", "directions": 10**9},
            InvalidArgumentError,
            r"directions must be at most 256, got directions=1000000000",
        ),
        (
            {"method": "screen", "seed": -1},
            InvalidArgumentError,
            r"seed must be at least 0, got seed=-1",
        ),
        (
            {"method": "screen", "references": {}},
            InvalidArgumentError,
            r"references apply to method='full' only",
        ),
    ],
    ids=[
        "unknown-method",
        "method-none",
        "method-array",
        "directions-with-full",
        "no-directions",
        "float-directions",
        "too-many-directions",
        "negative-seed",
        "references-with-screen",
    ],
)
def test_compare_rejects_bad_screen_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        compare_delta_rule(*_case(), 0.5, **kwargs)


def test_report_summarises_a_screen():
    from gradcheck._report import format_details

    result = compare_delta_rule(*_case(), 0.5, method="screen")
    fixed = compare_delta_rule(*_case(), 0.5, method="screen", directions=3)

    text = format_details(result.to_dict()["details"])

    assert text.startswith(
        "screen=1 of up to 4 directions (seed 0); largest miss probability "
    )
    assert text.endswith("checked in full: none")
    assert format_details(fixed.to_dict()["details"]).startswith(
        "screen=3 directions (seed 0); "
    )


def test_screen_gathers_evidence_only_on_what_it_checked_in_full():
    case = _case()

    right = compare_delta_rule(*case, 0.5, method="screen")
    wrong = compare_delta_rule(
        *case, 0.5, mutants.get("hidden-sum-transposed").derivation, method="screen"
    )

    # Nothing was checked in full, so there is no entry to sweep, no full
    # gradient for the Taylor test and no reference to tighten.
    assert right.sweeps == ()
    assert right.taylor == ()
    assert right.complex_step.status == "off"
    assert right.complex_step.reason == "nothing was checked in full"
    drilled = wrong.details["screen"]["checked_in_full"]
    assert wrong.sweeps
    assert {s.entry.partition("][")[0] + "]" for s in wrong.sweeps} <= set(drilled)
    assert wrong.complex_step.status == "used"


@pytest.mark.parametrize("seed", range(5))
def test_screen_noise_estimate_covers_what_the_trials_measure(seed):
    import jax

    from gradcheck._references import (
        _autodiff_rows,
        _draw_trials,
        _perturbation_spread,
    )
    from gradcheck._rounding import net_input_magnitudes
    from gradcheck._screen import _rounding_bounds

    network, params, x, d = _case(NETWORK, batch=4, seed=seed)
    z = np.concatenate([np.ravel(params[name]) for name in network.param_shapes()])
    with jax.enable_x64(True):
        rows = _autodiff_rows(network, _draw_trials(network, z, x, d))
    measured = _perturbation_spread(rows)

    magnitude = net_input_magnitudes(network, params, rows[0]["sigma"], x)
    estimated = _rounding_bounds(rows[0], z, magnitude)

    assert measured["loss"] <= estimated["loss"] <= 20 * measured["loss"]
    for v in range(1, network.n_layers):
        assert np.all(measured[f"sigma[{v}]"] <= 2 * estimated[f"sigma[{v}]"])


def test_screen_allows_for_rounding_of_a_sum_that_cancels():
    # A right derivation of a network whose dE/db[3] (9.7e-8) is a sum
    # over the batch of terms a thousand times larger: it differs from
    # autodiff by 2e-12 of itself, far more than ulps of its own size. The
    # screen holds it to a running error bound of the sum's terms instead,
    # so it passes without a full check.
    data = np.load(DATA / "screen_cancelling_bias.npz")
    network = Network((5, 7, 12, 1, 5), skips=((0, 3), (2, 4)), bias=True)
    params = {k.removeprefix("param:"): data[k] for k in data if "param:" in k}

    full = compare_delta_rule(network, params, data["x"], data["d"], 0.3)
    screen = compare_delta_rule(
        network, params, data["x"], data["d"], 0.3, method="screen", seed=168
    )

    assert full.verdict is Verdict.PASS
    worst = full.quantity("dE/db[3]").worst[0]
    assert abs(worst.analytic - worst.autodiff) > 1e-13 * abs(worst.autodiff)
    assert screen.verdict is Verdict.PASS
    assert screen.details["screen"]["checked_in_full"] == []


def test_screen_differences_the_first_direction_of_each_tensor():
    result = compare_delta_rule(*_case(), 0.5, method="screen", directions=3)

    for name, facts in result.details["screen"]["quantities"].items():
        worst = {w.name: w for w in result.quantity(name).worst}
        assert np.isfinite(worst[f"{name}<r0>"].numeric)
        if name.startswith("dy/ds"):
            # The sigmoid's own differences are per entry, so every
            # direction has them.
            assert facts["differenced"] == 3, name
            assert np.isfinite(worst[f"{name}<r2>"].numeric)
        else:
            assert facts["differenced"] == 1, name
            assert np.isnan(worst[f"{name}<r1>"].numeric)
    # The band is rounding's, not the finite differences': errors of a
    # millionth are all but certain to show.
    quantity = result.details["screen"]["quantities"]["dE/dW[0->1]"]
    assert quantity["relative_band"] < 1e-10
    assert quantity["miss_probability"]["1e-06"] < 1e-9


def test_screen_finds_an_error_below_what_finite_differences_resolve():
    network, params, x, d = _case()

    def off_by_a_millionth(network, params, x, d, eta):
        q = delta_rule(network, params, x, d, eta)
        q["dE/dW[1->2]"] = q["dE/dW[1->2]"] * (1 + 1e-6)
        return q

    result = compare_delta_rule(
        network, params, x, d, 0.5, off_by_a_millionth, method="screen"
    )

    assert result.details["screen"]["checked_in_full"] == ["dE/dW[1->2]"]


def test_the_first_directions_of_a_draw_are_a_smaller_draw():
    from gradcheck._screen import _drawn

    shapes = (("W[0->1]", (3, 4)), ("b[1]", (4,)), ("s[1]", (2, 4)))

    four, one = _drawn(shapes, 4, 11), _drawn(shapes, 1, 11)

    for key, shape in shapes:
        assert four.rows[key].shape == (4, math.prod(shape))
        np.testing.assert_array_equal(four.rows[key][:1], one.rows[key])
        assert four.rows[key].flags.c_contiguous
        assert not four.rows[key].flags.writeable
        np.testing.assert_array_equal(
            four.abs_max[key], np.abs(four.rows[key]).max(axis=1)
        )


def test_kept_directions_are_the_drawn_ones_and_read_only():
    from gradcheck._screen import _draw_directions, _drawn

    shapes = (("W[0->1]", (3, 4)), ("b[1]", (4,)))

    kept = _draw_directions(shapes, 2, 7)

    assert _draw_directions(shapes, 2, 7) is kept
    fresh = _drawn(shapes, 2, 7)
    for key in ("W[0->1]", "b[1]"):
        np.testing.assert_array_equal(kept.rows[key], fresh.rows[key])
        assert not kept.rows[key].flags.writeable
        np.testing.assert_array_equal(
            kept.abs_sums[key], np.abs(fresh.rows[key]).sum(axis=1)
        )


def test_screen_checks_a_non_finite_quantity_in_full():
    case = _case()

    def nan_entry(network, params, x, d, eta):
        q = delta_rule(network, params, x, d, eta)
        q["theta[2]"] = q["theta[2]"].copy()
        q["theta[2]"][0, 0] = np.nan
        return q

    result = compare_delta_rule(*case, 0.5, nan_entry, method="screen")

    assert result.verdict is Verdict.FAIL
    assert result.first_wrong == "theta[2]"
    assert result.details["screen"]["checked_in_full"] == ["theta[2]"]
    assert result.quantity("theta[2]").worst[0].name == "theta[2][0,0]"


def test_screen_sends_a_quantity_whose_band_drowns_it_to_the_full_check():
    # Found by fuzzing: weights of about 9 / sqrt(fan-in) saturate the
    # hidden units, and a float32 derivation's rounding bounds there are
    # forty times the projections of theta[1]. Its hidden sum is
    # transposed (relative error 1.1), and only a full check, entry by
    # entry, can tell: the screen must not pass it.
    rng = np.random.default_rng(21006)
    n_layers = int(rng.integers(2, 6))
    sizes = tuple(int(rng.integers(1, 13)) for _ in range(n_layers))
    possible = [(u, v) for u in range(n_layers) for v in range(u + 2, n_layers)]
    skips = tuple(p for p in possible if rng.random() < 0.4)
    network = Network(sizes, skips=skips, bias=bool(rng.random() < 0.6))
    params = init_params(network, rng, scale=float(10 ** rng.uniform(-1, 1)))
    batch, spread = int(rng.integers(1, 9)), float(rng.uniform(1, 5))
    x = rng.normal(size=(batch, sizes[0])) * spread
    d = rng.uniform(size=(batch, sizes[-1]))
    eta = float(10 ** rng.uniform(-2, 0.5))
    transposed = mutants.get("hidden-sum-transposed").derivation

    def in_float32(*args):
        return {k: np.asarray(v, np.float32) for k, v in transposed(*args).items()}

    result = compare_delta_rule(
        network, params, x, d, eta, in_float32, method="screen", seed=6
    )

    assert network.describe() == "12-7-7 +bias"
    assert result.verdict is Verdict.FAIL
    assert result.first_wrong == "theta[1]"
    facts = result.details["screen"]["quantities"]["theta[1]"]
    assert facts["miss_probability"]["0.01"] > 0.5
    # Four directions could not have settled so wide a band either, so
    # the default screen did not take them.
    assert facts["directions"] == 1
    assert "theta[1]" in result.details["screen"]["checked_in_full"]


def test_concurrent_screens_leave_blas_threads_as_they_were():
    import threading

    from threadpoolctl import threadpool_info

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    case = _case()
    before = blas_threads()
    expected = compare_delta_rule(*case, 0.5, method="screen").details
    results = []

    def screen():
        results.append(compare_delta_rule(*case, 0.5, method="screen").details)

    threads = [threading.Thread(target=screen) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert blas_threads() == before
    assert results == [expected] * 4


def test_screen_passes_nothing_when_its_bounds_overflow():
    # At eta = 5e307 the running error bounds of the updates overflow to
    # infinity: an infinite band must send the quantity to the full check,
    # not pass a 50% mistake.
    network = Network((3, 4, 2), skips=((0, 2),), bias=True)
    rng = np.random.default_rng(0)
    params = init_params(network, rng)
    x, d = rng.normal(size=(5, 3)), rng.uniform(size=(5, 2))

    def half_again(network, params, x, d, eta):
        q = delta_rule(network, params, x, d, eta)
        q["Delta W[0->1]"] = q["Delta W[0->1]"] * 1.5
        return q

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = compare_delta_rule(
            network, params, x, d, 5e307, half_again, method="screen"
        )

    assert result.verdict is Verdict.FAIL
    assert result.first_wrong == "Delta W[0->1]"


def test_screen_of_a_network_at_its_targets_checks_nothing_in_full():
    # Targets within 1e-9 of the outputs: dE/dy is known only to ulps of
    # y, which autodiff's own error bound covers; it sent dE/dy to the
    # full check in 12 of these 20 seeds.
    rng = np.random.default_rng(1)
    network = Network((4, 6, 3))
    params = init_params(network, rng)
    x = rng.normal(size=(6, 4))
    y = delta_rule(network, params, x, np.zeros((6, 3)), 0.1)["dE/dy[2]"]
    drilled = 0
    for seed in range(20):
        d = np.clip(y + rng.normal(size=y.shape) * 1e-9, 0, 1)
        result = compare_delta_rule(
            network, params, x, d, 0.1, method="screen", seed=seed
        )
        assert result.verdict is Verdict.PASS
        drilled += bool(result.details["screen"]["checked_in_full"])

    assert drilled <= 2


def test_screen_differences_only_the_tensors_a_returned_quantity_lies_along(
    monkeypatch,
):
    import gradcheck._screen as screen_module

    differenced = []
    original = screen_module._directional_differences

    def spy(point, tensors, *args):
        differenced.append(sorted(tensors))
        return original(point, tensors, *args)

    monkeypatch.setattr(screen_module, "_directional_differences", spy)

    def gradient_only(network, params, x, d, eta):
        values = delta_rule(network, params, x, d, eta)
        return {k: v for k, v in values.items() if k.startswith(("dE/dW", "dE/db"))}

    network = NETWORK
    result = compare_delta_rule(
        *_case(network), 0.5, derivation=gradient_only, method="screen"
    )

    assert result.verdict is Verdict.PASS
    # The probes on the net inputs and outputs (theta, dE/dy) were not
    # asked for, so no direction of theirs is run through the network.
    assert differenced == [sorted(network.param_shapes())]
    assert sorted(result.details["screen"]["quantities"]) == sorted(
        f"dE/d{name}" for name in network.param_shapes()
    )


def test_default_screen_takes_one_direction_where_it_settles_the_miss_probability():
    case = _case()

    adaptive = compare_delta_rule(*case, 0.5, method="screen", seed=3)
    fixed = compare_delta_rule(*case, 0.5, method="screen", directions=4, seed=3)

    assert adaptive.verdict is fixed.verdict is Verdict.PASS
    assert adaptive.details["screen"]["adaptive"] is True
    assert fixed.details["screen"]["adaptive"] is False
    assert adaptive.details["screen"]["directions"] == 4
    for name, facts in adaptive.details["screen"]["quantities"].items():
        # float64 bands leave a 1% error far less likely to slip past one
        # direction than MAX_MISS, so no quantity took more.
        assert facts["directions"] == 1, name
        assert facts["miss_probability"]["0.01"] <= 1e-4, name
        four = fixed.details["screen"]["quantities"][name]
        assert four["directions"] == 4
        assert four["miss_probability"]["0.01"] < facts["miss_probability"]["0.01"]
        # The first direction is the same one either way (projected in
        # another order of summation).
        first = adaptive.quantity(name).worst[0]
        assert first.name == f"{name}<r0>"
        same = {w.name: w for w in fixed.quantity(name).worst}[first.name]
        assert same.autodiff == pytest.approx(first.autodiff, rel=1e-12)


def test_default_screen_takes_every_direction_where_one_leaves_the_miss_too_likely(
    monkeypatch,
):
    import gradcheck._screen as screen_module

    # One direction of a float64 screen misses a 1% error with a
    # probability of about 1e-9: more than this, four far less.
    monkeypatch.setattr(screen_module, "MAX_MISS", 1e-16)
    case = _case()

    right = compare_delta_rule(*case, 0.5, method="screen", seed=3)
    wrong = compare_delta_rule(
        *case, 0.5, mutants.get("hidden-sum-transposed").derivation, method="screen"
    )

    assert right.verdict is Verdict.PASS
    assert right.details["screen"]["checked_in_full"] == []
    for name, facts in right.details["screen"]["quantities"].items():
        assert facts["directions"] == 4, name
        assert facts["miss_probability"]["0.01"] <= 1e-16, name
    # A mismatch along the first direction goes to the full check at once.
    assert wrong.verdict is Verdict.FAIL
    assert "theta[1]" in wrong.details["screen"]["checked_in_full"]
    assert wrong.details["screen"]["quantities"]["theta[1]"]["directions"] == 1
