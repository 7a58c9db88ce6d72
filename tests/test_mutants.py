# SPDX-License-Identifier: MIT
"""The mutant catalogue: its derivations, its registry and its errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from gradcheck import (
    InvalidArgumentError,
    InvalidTypeError,
    Network,
    delta_rule,
    mutants,
)
from gradcheck import strategies as gst
from gradcheck._delta_mutants import Backprop
from gradcheck._delta_rule import quantity_names
from gradcheck.mutants import DELTA_RULE, TANH_SOFTMAX, _first_match

# A small network on which every delta-rule mistake matters: two hidden
# layers of width 3, a skip from a hidden layer, biases, non-square weights.
RICH = Network((2, 3, 3, 2), ((1, 3),), True)

# The quantity each mutant changes first on RICH, in the document's order.
FIRST_ON_RICH = {
    "output-slope-missing": "theta[3]",
    "hidden-slope-missing": "theta[2]",
    "slope-y-one-plus-y": "dy/ds[3]",
    "slope-y-minus-one-minus-y": "dy/ds[3]",
    "slope-sigma-of-y": "dy/ds[3]",
    "slope-at-net-input": "dy/ds[3]",
    "error-sign-flipped": "dE/dy[3]",
    "half-forgotten": "dE/dy[3]",
    "hidden-sum-transposed": "theta[2]",
    "skip-successors-missing": "theta[1]",
    "successors-wrong-layer": "theta[2]",
    "updated-weights": "theta[2]",
    "bias-gradient-averaged": "dE/db[3]",
    "eta-twice": "Delta W[1->3]",
    "eta-missing": "Delta W[1->3]",
    "activation-index-off-by-one": "dE/dW[1->3]",
    "batch-loop-off-by-one": "dE/dW[1->3]",
    "slope-clipped": "dy/ds[3]",
}

DELTA_MUTANTS = [m for m in mutants.catalogue(DELTA_RULE) if m.builtin]


def rich_point(scale: float = 1.5, seed: int = 0, batch: int = 3):
    rng = np.random.default_rng(seed)
    params = {
        name: scale * rng.uniform(0.2, 1.0, shape) * rng.choice([-1, 1], shape)
        for name, shape in RICH.param_shapes().items()
    }
    x = rng.uniform(-2.0, 2.0, (batch, 2))
    d = rng.uniform(0.0, 1.0, (batch, 2))
    return RICH, params, x, d, 0.1


def test_catalogue_holds_at_least_fifteen_delta_rule_mistakes_and_two_others():
    assert len(DELTA_MUTANTS) >= 15
    assert {m.name for m in DELTA_MUTANTS} == set(FIRST_ON_RICH)
    others = {m.name for m in mutants.catalogue(TANH_SOFTMAX)}
    assert others == {"tanh-slope-one-minus-y", "softmax-jacobian-diagonal"}
    for m in mutants.catalogue():
        assert m.description and "\n" not in m.description
        assert m.builtin


@given(gst.delta_rule_cases())
def test_backprop_template_is_the_delta_rule_to_the_last_bit(case):
    right = delta_rule(*case.args)

    written = Backprop()(*case.args)

    assert list(written) == list(right)
    for name in right:
        np.testing.assert_array_equal(written[name], right[name], err_msg=name)


@pytest.mark.parametrize("mutant", DELTA_MUTANTS, ids=lambda m: m.name)
def test_mutant_first_changes_the_quantity_it_touches(mutant):
    network, params, x, d, eta = rich_point(
        scale=40.0 if "clip" in mutant.name else 1.5
    )
    right = delta_rule(network, params, x, d, eta)

    wrong = mutant.derivation(network, params, x, d, eta)

    changed = [
        name
        for name in quantity_names(network)
        if wrong[name].shape != right[name].shape
        or not np.allclose(wrong[name], right[name], rtol=1e-12, atol=0.0)
    ]
    assert changed[0] == FIRST_ON_RICH[mutant.name]
    if mutant.name != "slope-clipped":  # where it shows depends on the data
        assert mutant.expected_first(network) == FIRST_ON_RICH[mutant.name]


def test_mutants_leave_the_caller_arrays_alone():
    network, params, x, d, eta = rich_point()
    before = {k: v.copy() for k, v in params.items()}

    for m in DELTA_MUTANTS:
        m.derivation(network, params, x, d, eta)

    for name, value in before.items():
        np.testing.assert_array_equal(params[name], value)


@pytest.mark.parametrize(
    ("touches", "network", "expected"),
    [
        ("theta[L]", RICH, "theta[3]"),
        ("theta[h]", RICH, "theta[2]"),
        ("dy/ds[L-1]", RICH, "dy/ds[2]"),
        ("dE/dW[u->L]", RICH, "dE/dW[1->3]"),
        ("Delta W[0->1]", RICH, "Delta W[0->1]"),
        ("dE/db[v]", RICH, "dE/db[3]"),
        ("theta[h]", Network((3, 2)), None),
        ("dE/db[L]", Network((3, 2), (), False), None),
    ],
)
def test_touches_patterns_resolve_in_the_documents_order(touches, network, expected):
    assert _first_match(touches, network) == expected


def test_skip_and_transpose_mutants_locate_where_they_can_show():
    skip = mutants.get("skip-successors-missing")
    transposed = mutants.get("hidden-sum-transposed")

    assert skip.expected_first(Network((2, 3, 3, 2))) is None
    assert skip.expected_first(Network((2, 3, 3, 3, 2), ((1, 3),))) == "theta[1]"
    # Width-1 layers: the misread weights are the transpose, so it is right.
    assert transposed.expected_first(Network((2, 1, 3, 1))) is None
    assert transposed.expected_first(Network((2, 2, 3, 1))) == "theta[1]"


def _my_backprop(network, params, x, d, eta):
    return delta_rule(network, params, x, d, 2.0 * eta)


@pytest.fixture
def registered():
    mutant = mutants.register(
        "test-eta-doubled",
        _my_backprop,
        description="eta doubled in the update",
        touches="Delta W[u->L]",
    )
    yield mutant
    mutants.unregister("test-eta-doubled")


def test_register_adds_to_the_catalogue_and_unregister_removes(registered):
    assert mutants.get("test-eta-doubled") is registered
    assert mutants.catalogue()[-1] is registered
    assert not registered.builtin
    assert registered.model == DELTA_RULE
    assert registered.expected_first(RICH) == "Delta W[1->3]"

    mutants.unregister("test-eta-doubled")
    assert "test-eta-doubled" not in {m.name for m in mutants.catalogue()}
    mutants.register(  # for the fixture's teardown
        "test-eta-doubled", _my_backprop, description="again", touches="theta[L]"
    )


def test_register_replaces_own_mutant_only_when_asked(registered):
    with pytest.raises(InvalidArgumentError, match="pass replace=True"):
        mutants.register(
            "test-eta-doubled", _my_backprop, description="x", touches="theta[L]"
        )

    again = mutants.register(
        "test-eta-doubled",
        _my_backprop,
        description="now the output",
        touches="theta[L]",
        replace=True,
    )

    assert mutants.get("test-eta-doubled") is again


def test_register_a_gradient_model_mutant(registered):
    mutant = mutants.register(
        "test-softmax",
        TANH_SOFTMAX.grad,
        description="the right gradient",
        touches="dL/dz",
        model=TANH_SOFTMAX,
    )
    try:
        assert mutant.expected_first() == "dL/dz"
        assert mutant in mutants.catalogue("tanh-softmax")
    finally:
        mutants.unregister("test-softmax")


def _ok(**overrides):
    args = {
        "name": "fine",
        "derivation": _my_backprop,
        "description": "one line",
        "touches": "theta[L]",
    }
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (_ok(name=""), InvalidArgumentError, "name must be one non-empty line"),
        (_ok(name="Has Space"), InvalidArgumentError, "name must be lowercase"),
        (_ok(name=3), InvalidTypeError, "name must be a string, got name=3"),
        (
            _ok(name="output-slope-missing"),
            InvalidArgumentError,
            "'output-slope-missing' is already registered; it is built in",
        ),
        (_ok(derivation=42), InvalidTypeError, "derivation must be callable"),
        (_ok(description=""), InvalidArgumentError, "description must be one"),
        (_ok(description="a\nb"), InvalidArgumentError, "description must be one"),
        (_ok(touches="theta"), InvalidArgumentError, r"touches must be a delta-rule"),
        (_ok(touches="W[0->1]"), InvalidArgumentError, r"got touches='W\[0->1\]'"),
        (_ok(touches="theta[x]"), InvalidArgumentError, "touches must be"),
        (_ok(model="softmax"), InvalidTypeError, "model must be a gradcheck"),
        (
            _ok(model=TANH_SOFTMAX, touches="theta[L]"),
            InvalidArgumentError,
            "touches must name a quantity of the model 'tanh-softmax'",
        ),
        (_ok(locate="theta[1]"), InvalidTypeError, "locate must be callable"),
    ],
    ids=[
        "empty-name",
        "name-with-space",
        "name-not-str",
        "builtin-name",
        "not-callable",
        "empty-description",
        "two-line-description",
        "touches-without-layer",
        "touches-unknown-kind",
        "touches-bad-layer",
        "model-not-a-model",
        "touches-not-in-model",
        "locate-not-callable",
    ],
)
def test_register_rejects_bad_registrations(arguments, error, message):
    name = arguments.pop("name")
    derivation = arguments.pop("derivation")

    with pytest.raises(error, match=message):
        mutants.register(name, derivation, **arguments)

    assert "fine" not in {m.name for m in mutants.catalogue()}


def test_unknown_and_builtin_names_cannot_be_removed():
    with pytest.raises(InvalidArgumentError, match="no mutant is named 'nope'"):
        mutants.unregister("nope")
    with pytest.raises(InvalidArgumentError, match="built in and cannot be removed"):
        mutants.unregister("eta-twice")
    with pytest.raises(InvalidArgumentError, match="needs a network"):
        mutants.get("eta-twice").expected_first()
