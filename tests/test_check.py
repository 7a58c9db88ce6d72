# SPDX-License-Identifier: MIT
"""Checking whole derivations: right ones pass, wrong ones are caught at the
first wrong step, and disagreeing references are never blamed on them."""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from numpy.testing import assert_array_equal

from examples.delta_rule_mistakes import (
    flipped_error_sign,
    gradient_without_half,
    hidden_slope_plus,
    hidden_slope_plus_gradient_only,
    missing_output_slope,
    missing_skip_successors,
    right_backprop,
    update_without_eta,
)
from gradcheck import (
    DerivationError,
    GradcheckError,
    GradientMismatchError,
    InputMutationError,
    InvalidArgumentError,
    InvalidTypeError,
    Network,
    Verdict,
    bias_name,
    check_delta_rule,
    compare_delta_rule,
    delta_rule,
    format_failure,
    init_params,
    quantity_names,
    required_quantity_names,
    weight_name,
)
from gradcheck import strategies as gst
from gradcheck._compare import Reference, combine_verdicts, compare_quantity
from gradcheck._numeric import NumericEstimate

# One architecture and batch size for most tests, so JAX compiles the
# references once: layer 1 feeds layer 2 and, through a skip, layer 3.
SKIP_NET = Network((2, 3, 2, 1), skips=((1, 3),), bias=True)
BATCH = 4
ETA = 0.1


def _case(network: Network, seed: int = 0, scale: float = 1.0) -> tuple:
    rng = np.random.default_rng(seed)
    params = init_params(network, rng, scale=scale)
    x = rng.uniform(-2.0, 2.0, (BATCH, network.sizes[0]))
    d = rng.uniform(0.0, 1.0, (BATCH, network.sizes[-1]))
    return params, x, d


def _sigmoid(s: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(s))
    return np.where(s >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _outputs(network: Network, params: dict, x: np.ndarray) -> dict:
    """Net inputs s and outputs y per layer, as a person would write them."""
    s, y = {}, {0: x}
    for v in range(1, network.n_layers):
        s[v] = sum(y[u] @ params[weight_name(u, v)] for u in network.predecessors(v))
        if network.bias:
            s[v] = s[v] + params[bias_name(v)]
        y[v] = _sigmoid(s[v])
    return s, y


# (a) The built-in delta rule on fixed networks.

FIXED_CASES = [
    pytest.param(Network((2, 3, 1)), 1.0, id="2-3-1-bias"),
    pytest.param(SKIP_NET, 1.0, id="skip-1-3-bias"),
    pytest.param(
        Network((3, 4, 4, 2), skips=((0, 2), (0, 3), (1, 3)), bias=False),
        1.0,
        id="three-skips-no-bias",
    ),
    pytest.param(SKIP_NET, 30.0, id="skip-1-3-bias-saturating"),
    pytest.param(
        Network((3, 4, 4, 2), skips=((0, 2), (0, 3), (1, 3)), bias=False),
        30.0,
        id="three-skips-no-bias-saturating",
    ),
    pytest.param(SKIP_NET, 1e-3, id="skip-1-3-bias-tiny"),
    pytest.param(
        Network((2, 3, 2, 1), skips=((0, 2),), bias=False),
        1e-3,
        id="skip-0-2-no-bias-tiny",
    ),
]


@pytest.mark.parametrize(("network", "scale"), FIXED_CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_builtin_delta_rule_passes_on_fixed_network(network, scale, seed):
    params, x, d = _case(network, seed, scale)

    result = compare_delta_rule(network, params, x, d, ETA)

    assert result.verdict is Verdict.PASS, format_failure(result)
    assert result.first_wrong is None
    assert result.not_provided == ()
    assert [q.name for q in result.quantities] == quantity_names(network)


def test_saturating_scale_really_saturates_units():
    params, x, _ = _case(SKIP_NET, seed=0, scale=30.0)

    s, _ = _outputs(SKIP_NET, params, x)

    net_inputs = np.concatenate([a.ravel() for a in s.values()])
    assert np.mean(np.abs(net_inputs) > 10.0) > 0.5


def test_hand_written_right_backprop_passes():
    params, x, d = _case(SKIP_NET, seed=3)

    result = compare_delta_rule(SKIP_NET, params, x, d, ETA, right_backprop)

    assert result.verdict is Verdict.PASS, format_failure(result)


@pytest.mark.parametrize("offset", [0.0, 1e-9, 1e-4])
def test_builtin_delta_rule_never_fails_when_targets_match_outputs(offset):
    # A well-trained network has d close to y. Then dE/dy = -(d - y) is a
    # difference of nearly equal numbers, known only to eps * |y|, while
    # the band's rounding floor is eps times the (tiny) size of dE/dy
    # itself, so a correct derivation can be blamed.
    network = Network((3, 4, 4, 2), skips=((0, 2), (0, 3), (1, 3)), bias=False)
    params, x, _ = _case(network, seed=0)
    _, y = _outputs(network, params, x)
    d = y[network.output_layer] + offset

    result = compare_delta_rule(network, params, x, d, ETA)

    assert result.verdict is not Verdict.FAIL, format_failure(result)


# (b) The built-in delta rule on generated networks.


def _assert_passes(case: gst.DeltaRuleCase) -> None:
    result = compare_delta_rule(*case.args)

    unsettled = [
        f"{q.name}: {q.n_unsettled} of {q.size} entries, reference gap "
        f"{q.max_reference_ratio:.3g} times the band"
        for q in result.quantities
        if q.verdict is Verdict.INCONCLUSIVE
    ]
    assert result.verdict is not Verdict.FAIL, format_failure(result)
    assert result.verdict is Verdict.PASS, (
        f"references disagree on {case.describe()}: " + "; ".join(unsettled)
    )


# Each new architecture and batch size compiles the references (about 1 s),
# so the profile's full run is slow; a few examples stay in the default run.
@pytest.mark.slow
@given(gst.delta_rule_cases())
def test_builtin_delta_rule_never_fails_on_generated_networks(case):
    _assert_passes(case)


@settings(max_examples=5)
@given(gst.delta_rule_cases())
def test_builtin_delta_rule_never_fails_on_a_few_generated_networks(case):
    _assert_passes(case)


# (c) Wrong derivations are caught at their first wrong quantity.

MISTAKES = [
    pytest.param(missing_output_slope, "theta[3]", id="output-theta-no-slope"),
    pytest.param(flipped_error_sign, "dE/dy[3]", id="flipped-error-sign"),
    pytest.param(missing_skip_successors, "theta[1]", id="theta-ignores-skip"),
    pytest.param(update_without_eta, "Delta W[1->3]", id="update-without-eta"),
    pytest.param(gradient_without_half, "dE/dW[1->3]", id="gradient-without-half"),
    pytest.param(hidden_slope_plus, "dy/ds[2]", id="hidden-slope-y-1-plus-y"),
    pytest.param(
        hidden_slope_plus_gradient_only,
        "dE/dW[1->2]",
        id="hidden-slope-y-1-plus-y-gradient-only",
    ),
]


@pytest.mark.parametrize(("derivation", "first_wrong"), MISTAKES)
def test_wrong_derivation_fails_at_first_wrong_quantity(derivation, first_wrong):
    params, x, d = _case(SKIP_NET, seed=3)

    result = compare_delta_rule(SKIP_NET, params, x, d, ETA, derivation)

    assert result.verdict is Verdict.FAIL
    assert result.first_wrong == first_wrong, format_failure(result)
    names = [q.name for q in result.quantities]
    before = result.quantities[: names.index(first_wrong)]
    assert all(q.verdict is Verdict.PASS for q in before)
    assert result.quantity(first_wrong).n_mismatched > 0


def test_skip_mistake_is_invisible_without_skips():
    # The same code is right on a network without skip connections, so
    # the failure above is really about the skip.
    network = Network((2, 3, 2, 1), bias=True)
    params, x, d = _case(network, seed=3)

    result = compare_delta_rule(network, params, x, d, ETA, missing_skip_successors)

    assert result.verdict is Verdict.PASS, format_failure(result)


# (d) check_delta_rule raises on a wrong derivation.


def test_check_delta_rule_raises_mismatch_naming_first_wrong_quantity():
    params, x, d = _case(SKIP_NET, seed=3)

    with pytest.raises(GradientMismatchError) as info:
        check_delta_rule(
            SKIP_NET, params, x, d, ETA, missing_output_slope, reproduce="seed 3"
        )

    err = info.value
    assert isinstance(err, AssertionError)
    assert isinstance(err, GradcheckError)
    message = str(err)
    assert "first wrong quantity: theta[3]" in message
    assert "theta[3][" in message
    assert "on 2-3-2-1 +skip 1->3 +bias (batch 4, eta 0.1)" in message
    assert "reproduce: seed 3" in message
    assert err.result.first_wrong == "theta[3]"
    assert err.result.verdict is Verdict.FAIL


def test_check_delta_rule_returns_result_when_right():
    params, x, d = _case(SKIP_NET, seed=3)

    result = check_delta_rule(SKIP_NET, params, x, d, ETA)

    assert result.verdict is Verdict.PASS


# (e) What a derivation returns.


def _returning(change):
    def derivation(network, params, x, d, eta):
        quantities = delta_rule(network, params, x, d, eta)
        change(quantities)
        return quantities

    return derivation


def test_wrong_shape_fails_with_a_note():
    params, x, d = _case(SKIP_NET, seed=3)
    derivation = _returning(lambda q: q.update({"theta[3]": q["theta[3]"].T}))

    result = compare_delta_rule(SKIP_NET, params, x, d, ETA, derivation)

    assert result.verdict is Verdict.FAIL
    assert result.first_wrong == "theta[3]"
    note = result.quantity("theta[3]").note
    assert note == "the derivation returned shape (1, 4), expected (4, 1)"
    assert note in format_failure(result)


def test_unknown_quantity_name_is_rejected():
    params, x, d = _case(SKIP_NET, seed=3)
    derivation = _returning(lambda q: q.update({"theta[7]": q["theta[3]"]}))

    with pytest.raises(
        InvalidArgumentError, match=r"unknown quantities \['theta\[7\]'\]"
    ):
        compare_delta_rule(SKIP_NET, params, x, d, ETA, derivation)


def test_missing_weight_gradient_is_rejected():
    params, x, d = _case(SKIP_NET, seed=3)
    derivation = _returning(lambda q: q.pop("dE/dW[0->1]"))

    with pytest.raises(
        InvalidArgumentError,
        match=r"must return the gradient of E, but \['dE/dW\[0->1\]'\] are missing",
    ) as info:
        compare_delta_rule(SKIP_NET, params, x, d, ETA, derivation)

    assert isinstance(info.value, ValueError)


def test_non_mapping_return_is_rejected():
    params, x, d = _case(SKIP_NET, seed=3)

    def derivation(network, params, x, d, eta):
        return list(delta_rule(network, params, x, d, eta).values())

    with pytest.raises(InvalidTypeError, match="must return a mapping") as info:
        compare_delta_rule(SKIP_NET, params, x, d, ETA, derivation)

    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize("method", ["full", "screen"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([[1, 2], [3]], r"got a list that numpy cannot make one of"),
        (np.array(["a", "b"]), r"got dtype <U1"),
    ],
    ids=["ragged", "strings"],
)
def test_non_numeric_quantity_is_named(value, message, method):
    params, x, d = _case(SKIP_NET, seed=3)

    def derivation(network, params, x, d, eta):
        q = delta_rule(network, params, x, d, eta)
        q["theta[1]"] = value
        return q

    with pytest.raises(
        InvalidTypeError, match=r"the derivation's theta\[1\] must be an array of "
    ) as info:
        compare_delta_rule(SKIP_NET, params, x, d, ETA, derivation, method=method)

    assert re.search(message, str(info.value))


def test_derivation_that_raises_is_reported_as_such():
    params, x, d = _case(SKIP_NET, seed=3)

    def derivation(network, params, x, d, eta):
        raise KeyError("W[9->9]")

    with pytest.raises(DerivationError, match=r"raised KeyError: 'W\[9->9\]'") as info:
        compare_delta_rule(SKIP_NET, params, x, d, ETA, derivation)

    assert isinstance(info.value.__cause__, KeyError)


def test_gradient_only_derivation_is_checked_and_lists_the_rest():
    params, x, d = _case(SKIP_NET, seed=3)

    def derivation(network, params, x, d, eta):
        quantities = delta_rule(network, params, x, d, eta)
        return {n: quantities[n] for n in required_quantity_names(network)}

    result = compare_delta_rule(SKIP_NET, params, x, d, ETA, derivation)

    assert result.verdict is Verdict.PASS, format_failure(result)
    required = required_quantity_names(SKIP_NET)
    assert sorted(q.name for q in result.quantities) == sorted(required)
    expected_rest = [n for n in quantity_names(SKIP_NET) if n not in required]
    assert list(result.not_provided) == expected_rest


# (f) The derivation works on copies, and one that changes them is named.


def test_derivation_that_scribbles_on_its_arguments_is_named():
    params, x, d = _case(SKIP_NET, seed=3)
    originals = ({k: v.copy() for k, v in params.items()}, x.copy(), d.copy())

    def scribbler(network, params, x, d, eta):
        quantities = delta_rule(network, params, x, d, eta)
        for array in params.values():
            array[...] = 7.0
        x[...] = 0.0
        d[...] = 1.0
        return quantities

    with pytest.raises(InputMutationError) as info:
        compare_delta_rule(SKIP_NET, params, x, d, ETA, scribbler)

    first = next(iter(params))
    assert info.value.role == "derivation"
    assert info.value.argument == "params"
    assert info.value.leaf == first
    assert info.value.n_changed == params[first].size
    assert f"changed its input params leaf {first} in place" in str(info.value)
    for name, value in originals[0].items():
        assert_array_equal(params[name], value)
    assert_array_equal(x, originals[1])
    assert_array_equal(d, originals[2])


# (g) Triage: disagreeing references make an entry unsettled, never wrong.


def _reference(numeric, autodiff, error, rounding=1e-11) -> Reference:
    # rounding: how far autodiff may move under a few ulps of its inputs;
    # a right analytic value is expected within it.
    numeric = np.asarray(numeric, dtype=np.float64)
    estimate = NumericEstimate(
        value=numeric,
        error=np.broadcast_to(np.asarray(error, dtype=np.float64), numeric.shape),
        step=np.full(numeric.shape, 6e-6),
    )
    autodiff = np.asarray(autodiff, dtype=np.float64)
    return Reference(estimate, autodiff, rounding=np.full(autodiff.shape, rounding))


@pytest.mark.parametrize(
    "analytic",
    [
        pytest.param(1.0, id="analytic-equals-autodiff"),
        pytest.param(1.1, id="analytic-equals-numeric"),
        pytest.param(5.0, id="analytic-far-from-both"),
    ],
)
def test_reference_disagreement_is_inconclusive_never_fail(analytic):
    # The references are 0.1 apart and the band is about 4e-9.
    reference = _reference([1.1], [1.0], 1e-9)

    comparison = compare_quantity("dE/dW[0->1]", np.array([analytic]), reference)

    assert comparison.verdict is Verdict.INCONCLUSIVE
    assert comparison.n_unsettled == 1
    assert comparison.n_mismatched == 0
    assert comparison.max_reference_ratio > 1.0


def test_analytic_off_while_references_agree_fails():
    reference = _reference([1.0, -2.0], [1.0 + 1e-12, -2.0], 1e-9)

    comparison = compare_quantity("theta[1]", np.array([1.0, -2.01]), reference)

    assert comparison.verdict is Verdict.FAIL
    assert comparison.n_mismatched == 1
    assert comparison.n_unsettled == 0
    assert comparison.worst[0].name == "theta[1][1]"
    assert comparison.worst[0].analytic == -2.01


def test_mismatch_elsewhere_fails_even_with_an_unsettled_entry():
    reference = _reference([1.1, 3.0], [1.0, 3.0], 1e-9)

    comparison = compare_quantity("theta[1]", np.array([1.0, 3.5]), reference)

    assert comparison.verdict is Verdict.FAIL
    assert comparison.n_unsettled == 1
    assert comparison.n_mismatched == 1


def test_entries_near_zero_pass_within_the_rounding_band():
    # A realistic numeric error estimate: 64 eps |E| / (h / 2) for a loss
    # of order 1 and h = 6e-6 is about 5e-9.
    reference = _reference([0.0, 0.0], [1e-13, -3e-14], 5e-9)

    comparison = compare_quantity("theta[2]", np.array([1e-12, 0.0]), reference)

    assert comparison.verdict is Verdict.PASS
    assert comparison.n_mismatched == comparison.n_unsettled == 0
    assert comparison.max_band_ratio < 1.0


def test_nan_analytic_entry_never_passes():
    reference = _reference([0.5], [0.5], 1e-9)

    comparison = compare_quantity("theta[2]", np.array([np.nan]), reference)

    assert comparison.verdict is Verdict.FAIL


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ([Verdict.PASS, Verdict.PASS], Verdict.PASS),
        ([Verdict.PASS, Verdict.INCONCLUSIVE], Verdict.INCONCLUSIVE),
        ([Verdict.INCONCLUSIVE, Verdict.FAIL, Verdict.PASS], Verdict.FAIL),
        ([], Verdict.PASS),
    ],
)
def test_combine_verdicts_ranks_fail_over_inconclusive_over_pass(verdicts, expected):
    assert combine_verdicts(verdicts) is expected


# Lower precision: a right derivation computed in float32, or returning
# jax.numpy arrays, is held to float32 and passes; a wrong one still fails.


def _float32_everywhere(network, params, x, d, eta):
    params = {name: value.astype(np.float32) for name, value in params.items()}
    return right_backprop(
        network, params, x.astype(np.float32), d.astype(np.float32), np.float32(eta)
    )


def _float32_missing_slope(network, params, x, d, eta):
    result = missing_output_slope(network, params, x, d, eta)
    return {name: value.astype(np.float32) for name, value in result.items()}


def _jax_arrays(network, params, x, d, eta):
    return {
        k: jnp.asarray(v) for k, v in delta_rule(network, params, x, d, eta).items()
    }


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
@pytest.mark.parametrize(
    "derivation", [_float32_everywhere, _jax_arrays], ids=["float32", "jax-arrays"]
)
def test_right_lower_precision_derivation_passes(derivation, scale):
    params, x, d = _case(SKIP_NET, seed=5, scale=scale)

    result = compare_delta_rule(SKIP_NET, params, x, d, ETA, derivation)

    assert result.verdict is Verdict.PASS, format_failure(result)


def test_wrong_float32_derivation_still_fails():
    params, x, d = _case(SKIP_NET, seed=5)

    result = compare_delta_rule(SKIP_NET, params, x, d, ETA, _float32_missing_slope)

    assert result.first_wrong == "theta[3]"
    assert result.quantity("theta[3]").precision == "float32"


def test_difference_below_numeric_resolution_is_inconclusive_not_pass():
    # autodiff says 1.6e-9, the analytic value says 0, and finite
    # differences can only resolve 5e-9 here: a real difference that the
    # numeric reference cannot settle.
    reference = _reference([0.0, 1e-9], [1.6e-9, 1e-9], 1.3e-9, rounding=1e-20)

    comparison = compare_quantity("W1", np.array([0.0, 1e-9]), reference)

    assert comparison.verdict is Verdict.INCONCLUSIVE
    assert comparison.n_unsettled == 1
    assert "less than finite differences can resolve" in comparison.note
