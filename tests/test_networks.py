# SPDX-License-Identifier: MIT
"""Network validation, the bad-input table, and the forward pass and loss."""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose

from gradcheck import (
    DerivationLoadError,
    GradcheckError,
    InvalidArgumentError,
    Network,
    compare_delta_rule,
    delta_rule,
    init_params,
    load_derivation,
    squared_error,
)
from gradcheck._networks import example_losses, forward

NET = Network((2, 2, 1), bias=True)
X = np.array([[0.5, -1.0]])
D = np.array([[0.25]])


def _params(**changes: object) -> dict:
    """Valid parameters for NET, with entries replaced or (for None) removed."""
    params = init_params(NET, np.random.default_rng(0))
    for name, value in changes.items():
        if value is None:
            del params[name]
        else:
            params[name] = value
    return params


def _with_entry(name: str, index: tuple[int, ...], value: float) -> dict:
    params = _params()
    params[name][index] = value
    return params


def _compare(**overrides: object):
    """Call compare_delta_rule on NET with valid arguments except overrides."""
    args = {"network": NET, "params": _params(), "x": X, "d": D, "eta": 0.1}
    args.update(overrides)
    return compare_delta_rule(**args)


def _extra_param() -> dict:
    params = _params()
    params["W[0->2]"] = np.zeros((2, 1))
    return params


# (call, builtin, pattern): the call must raise a GradcheckError that is also
# the builtin, with a message matching the pattern, which names the value.
BAD_INPUTS = [
    # Architectures.
    pytest.param(
        lambda: Network((2, 0, 1)),
        ValueError,
        r"layer 1 width must be at least 1, got 0 in sizes=\(2, 0, 1\)",
        id="layer-of-width-0",
    ),
    pytest.param(
        lambda: Network((2, -3, 1)),
        ValueError,
        r"layer 1 width must be at least 1, got -3",
        id="layer-of-negative-width",
    ),
    pytest.param(
        lambda: Network((3,)),
        ValueError,
        r"at least an input and an output layer, got sizes=\(3,\)",
        id="one-layer",
    ),
    pytest.param(
        lambda: Network(()),
        ValueError,
        r"at least an input and an output layer, got sizes=\(\)",
        id="no-layers",
    ),
    pytest.param(
        lambda: Network((2, 1.5, 1)),
        TypeError,
        r"layer 1 width must be an int, got 1\.5",
        id="float-width",
    ),
    pytest.param(
        lambda: Network((2, True, 1)),
        TypeError,
        r"layer 1 width must be an int, got True",
        id="bool-width",
    ),
    pytest.param(
        lambda: Network("221"),
        TypeError,
        r"sizes must be a sequence of layer widths, got sizes='221'",
        id="sizes-as-string",
    ),
    pytest.param(
        lambda: Network((2, 2, 2, 1), skips=((2, 0),)),
        ValueError,
        r"skip \(2, 0\) must satisfy 0 <= u and u \+ 1 < v < 4",
        id="skip-backwards",
    ),
    pytest.param(
        lambda: Network((2, 2, 2, 1), skips=((1, 1),)),
        ValueError,
        r"skip \(1, 1\) must satisfy",
        id="skip-to-itself",
    ),
    pytest.param(
        lambda: Network((2, 2, 2, 1), skips=((0, 1),)),
        ValueError,
        r"skip \(0, 1\) must satisfy .*neighbouring layers are always connected",
        id="skip-to-next-layer",
    ),
    pytest.param(
        lambda: Network((2, 2, 2, 1), skips=((1, 4),)),
        ValueError,
        r"skip \(1, 4\) must satisfy 0 <= u and u \+ 1 < v < 4",
        id="skip-past-output-layer",
    ),
    pytest.param(
        lambda: Network((2, 2, 2, 1), skips=((-1, 2),)),
        ValueError,
        r"skip \(-1, 2\) must satisfy",
        id="skip-from-negative-layer",
    ),
    pytest.param(
        lambda: Network((2, 2, 2, 1), skips=((0, 2, 3),)),
        TypeError,
        r"each skip must be a pair \(u, v\) of layer indices, got \(0, 2, 3\)",
        id="skip-not-a-pair",
    ),
    pytest.param(
        lambda: Network((2, 2, 2, 1), skips=3),
        TypeError,
        r"skips must be a sequence of \(u, v\) pairs, got skips=3",
        id="skips-not-a-sequence",
    ),
    # Parameters.
    pytest.param(
        lambda: _compare(params=_params(**{"W[1->2]": None})),
        ValueError,
        r"missing \['W\[1->2\]'\], unexpected \[\]",
        id="params-missing-a-name",
    ),
    pytest.param(
        lambda: _compare(params=_extra_param()),
        ValueError,
        r"missing \[\], unexpected \['W\[0->2\]'\]",
        id="params-extra-name",
    ),
    pytest.param(
        lambda: _compare(params=_params(**{"W[0->1]": np.zeros((2, 3))})),
        ValueError,
        r"params\['W\[0->1\]'\] must have shape \(2, 2\) .* got shape \(2, 3\)",
        id="params-wrong-shape",
    ),
    pytest.param(
        lambda: _compare(params=_params(**{"b[2]": np.zeros(())})),
        ValueError,
        r"params\['b\[2\]'\] must have shape \(1,\) .* got shape \(\)",
        id="params-bias-as-scalar",
    ),
    pytest.param(
        lambda: _compare(params=_with_entry("W[0->1]", (0, 1), np.nan)),
        ValueError,
        r"params\['W\[0->1\]'\] must be finite, got .*nan.* at index \(0, 1\)",
        id="params-nan-weight",
    ),
    pytest.param(
        lambda: _compare(params=_with_entry("W[1->2]", (1, 0), np.inf)),
        ValueError,
        r"params\['W\[1->2\]'\] must be finite, got .*inf.* at index \(1, 0\)",
        id="params-inf-weight",
    ),
    pytest.param(
        lambda: _compare(params=_with_entry("b[1]", (0,), -np.inf)),
        ValueError,
        r"params\['b\[1\]'\] must be finite, got .*-inf.* at index \(0,\)",
        id="params-minus-inf-bias",
    ),
    pytest.param(
        lambda: _compare(params=list(_params().values())),
        TypeError,
        r"params must be a mapping from names to arrays, got <class 'list'>",
        id="params-not-a-mapping",
    ),
    pytest.param(
        lambda: _compare(params=_params(**{"b[2]": np.array(["0.5"])})),
        TypeError,
        r"params\['b\[2\]'\] must be an array of real numbers, got dtype <U3",
        id="params-of-strings",
    ),
    # Inputs and targets.
    pytest.param(
        lambda: _compare(x=np.array([[np.nan, 0.0]])),
        ValueError,
        r"x must be finite, got .*nan.* at index \(0, 0\)",
        id="x-nan",
    ),
    pytest.param(
        lambda: _compare(x=np.array([[0.0, np.inf]])),
        ValueError,
        r"x must be finite, got .*inf.* at index \(0, 1\)",
        id="x-inf",
    ),
    pytest.param(
        lambda: _compare(d=np.array([[np.nan]])),
        ValueError,
        r"d must be finite, got .*nan.* at index \(0, 0\)",
        id="d-nan",
    ),
    pytest.param(
        lambda: _compare(d=np.array([[np.inf]])),
        ValueError,
        r"d must be finite, got .*inf.* at index \(0, 0\)",
        id="d-inf",
    ),
    pytest.param(
        lambda: _compare(d=np.array([[1.5]])),
        ValueError,
        r"targets d must lie in \[0, 1\], got .*1\.5.* at index \(0, 0\)",
        id="d-above-1",
    ),
    pytest.param(
        lambda: _compare(x=np.zeros((2, 2)), d=np.array([[0.5], [-0.25]])),
        ValueError,
        r"targets d must lie in \[0, 1\], got .*-0\.25.* at index \(1, 0\)",
        id="d-below-0",
    ),
    pytest.param(
        lambda: _compare(x=np.zeros((1, 3))),
        ValueError,
        r"x must have shape \(batch, 2\) with batch >= 1, got shape \(1, 3\)",
        id="x-wrong-width",
    ),
    pytest.param(
        lambda: _compare(x=np.zeros(2)),
        ValueError,
        r"x must have shape \(batch, 2\) with batch >= 1, got shape \(2,\)",
        id="x-one-dimensional",
    ),
    pytest.param(
        lambda: _compare(x=np.zeros((0, 2)), d=np.zeros((0, 1))),
        ValueError,
        r"x must have shape \(batch, 2\) with batch >= 1, got shape \(0, 2\)",
        id="x-empty-batch",
    ),
    pytest.param(
        lambda: _compare(d=np.zeros((1, 2))),
        ValueError,
        r"d must have shape \(1, 1\) to match x, got shape \(1, 2\)",
        id="d-wrong-width",
    ),
    pytest.param(
        lambda: _compare(d=np.zeros((2, 1))),
        ValueError,
        r"d must have shape \(1, 1\) to match x, got shape \(2, 1\)",
        id="d-wrong-batch",
    ),
    pytest.param(
        lambda: _compare(x=[["a", "b"]]),
        TypeError,
        r"x must be an array of real numbers, got dtype <U1",
        id="x-of-strings",
    ),
    # Learning rate.
    pytest.param(
        lambda: _compare(eta=0.0),
        ValueError,
        r"eta must be a positive finite float, got eta=0\.0$",
        id="eta-zero",
    ),
    pytest.param(
        lambda: _compare(eta=-0.1),
        ValueError,
        r"eta must be a positive finite float, got eta=-0\.1$",
        id="eta-negative",
    ),
    pytest.param(
        lambda: _compare(eta=float("nan")),
        ValueError,
        r"eta must be a positive finite float, got eta=nan$",
        id="eta-nan",
    ),
    pytest.param(
        lambda: _compare(eta=float("inf")),
        ValueError,
        r"eta must be a positive finite float, got eta=inf$",
        id="eta-inf",
    ),
    pytest.param(
        lambda: _compare(eta="0.1"),
        TypeError,
        r"eta must be a float, got eta='0\.1'$",
        id="eta-string",
    ),
    pytest.param(
        lambda: _compare(eta=True),
        TypeError,
        r"eta must be a float, got eta=True$",
        id="eta-bool",
    ),
    # Finite-difference step.
    pytest.param(
        lambda: _compare(rel_step=0.0),
        ValueError,
        r"finite-difference step must be a positive float, got rel_step=0\.0$",
        id="rel-step-zero",
    ),
    pytest.param(
        lambda: _compare(rel_step=-1e-3),
        ValueError,
        r"finite-difference step must be a positive float, got rel_step=-0\.001$",
        id="rel-step-negative",
    ),
    pytest.param(
        lambda: _compare(rel_step=float("nan")),
        ValueError,
        r"finite-difference step must be a positive float, got rel_step=nan$",
        id="rel-step-nan",
    ),
    pytest.param(
        lambda: _compare(rel_step=float("inf")),
        ValueError,
        r"finite-difference step must be a positive float, got rel_step=inf$",
        id="rel-step-inf",
    ),
    pytest.param(
        lambda: _compare(rel_step=1e-20),
        ValueError,
        r"step is below the resolution of float64 at .*: z \+ h == z",
        id="step-below-resolution",
    ),
    pytest.param(
        lambda: Network((2, 1), bias="no"),
        TypeError,
        r"bias must be True or False, got bias='no'",
        id="bias-not-bool",
    ),
    pytest.param(
        lambda: _compare(rel_step="1e-3"),
        TypeError,
        r"finite-difference step must be a float, got rel_step='1e-3'$",
        id="rel-step-string",
    ),
    # Network and derivation.
    pytest.param(
        lambda: _compare(network=(2, 2, 1)),
        TypeError,
        r"network must be a gradcheck\.Network, got <class 'tuple'>",
        id="network-not-a-network",
    ),
    pytest.param(
        lambda: _compare(derivation="mypkg:backprop"),
        TypeError,
        r"derivation must be callable, got 'mypkg:backprop'",
        id="derivation-not-callable",
    ),
]


@pytest.mark.parametrize(("call", "builtin", "pattern"), BAD_INPUTS)
def test_bad_input_raises_gradcheck_error_naming_the_value(call, builtin, pattern):
    with pytest.raises(builtin, match=pattern) as info:
        call()

    assert isinstance(info.value, GradcheckError)


def test_invalid_argument_error_keeps_name_and_value():
    with pytest.raises(InvalidArgumentError) as info:
        _compare(eta=-2.0)

    assert info.value.name == "eta"
    assert info.value.value == -2.0


@pytest.mark.parametrize(
    ("target", "pattern"),
    [
        pytest.param(
            "no_such_module_for_gradcheck:backprop",
            r"cannot import module 'no_such_module_for_gradcheck' for derivation "
            r"'no_such_module_for_gradcheck:backprop'",
            id="unknown-module",
        ),
        pytest.param(
            "gradcheck:no_such_backprop",
            r"module 'gradcheck' has no attribute 'no_such_backprop' "
            r"\(derivation 'gradcheck:no_such_backprop'\)",
            id="unknown-attribute",
        ),
        pytest.param(
            "gradcheck.delta_rule",
            r"must be given as 'module:function', got 'gradcheck\.delta_rule'",
            id="no-colon",
        ),
        pytest.param(
            ":delta_rule",
            r"must be given as 'module:function', got ':delta_rule'",
            id="no-module",
        ),
        pytest.param(
            "gradcheck:",
            r"must be given as 'module:function', got 'gradcheck:'",
            id="no-function",
        ),
        pytest.param(
            "gradcheck:__all__",
            r"derivation 'gradcheck:__all__' is not callable, got \[",
            id="not-callable",
        ),
    ],
)
def test_load_derivation_rejects_bad_target(target, pattern):
    with pytest.raises(DerivationLoadError, match=pattern) as info:
        load_derivation(target)

    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, GradcheckError)
    assert info.value.target == target


def test_load_derivation_imports_a_module_function():
    target = "gradcheck._delta_rule:delta_rule"

    loaded = load_derivation(target)

    assert loaded is delta_rule


def test_network_normalises_sizes_and_skips():
    network = Network([2, np.int64(3), 2, 1], skips=[(1, 3), (0, 2), (1, 3)])

    assert network.sizes == (2, 3, 2, 1)
    assert network.skips == ((0, 2), (1, 3))
    assert network.edges == ((0, 1), (0, 2), (1, 2), (1, 3), (2, 3))
    assert network.predecessors(3) == (1, 2)
    assert network.successors(1) == (2, 3)
    assert network.describe() == "2-3-2-1 +skip 0->2,1->3 +bias"


def test_network_rejects_non_integer_skip_index():
    # int() truncates 2.7 to 2, so this currently builds a network with a
    # 0->2 skip instead of refusing the non-integer layer index.
    with pytest.raises(TypeError, match=re.escape("(0, 2.7)")) as info:
        Network((2, 2, 2, 1), skips=((0, 2.7),))

    assert isinstance(info.value, GradcheckError)


@pytest.mark.parametrize(
    "network",
    [
        Network((2, 1)),
        Network((3, 4, 2), bias=False),
        Network((2, 3, 2, 1), skips=((0, 2), (1, 3))),
        Network((1, 5, 5, 5, 3), skips=((0, 4), (2, 4)), bias=False),
    ],
    ids=lambda n: n.describe(),
)
def test_init_params_gives_the_shapes_of_param_shapes(network):
    rng = np.random.default_rng(7)

    params = init_params(network, rng)

    assert list(params) == list(network.param_shapes())
    for name, shape in network.param_shapes().items():
        assert params[name].shape == shape
        assert params[name].dtype == np.float64
    assert sum(p.size for p in params.values()) == network.n_params


def test_init_params_is_reproducible_from_the_seed():
    network = Network((2, 3, 1))

    first = init_params(network, np.random.default_rng(3))
    second = init_params(network, np.random.default_rng(3))

    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


def _numpy_outputs(network: Network, params: dict, x: np.ndarray) -> np.ndarray:
    y = {0: x}
    for v in range(1, network.n_layers):
        s = sum(y[u] @ params[f"W[{u}->{v}]"] for u in network.predecessors(v))
        if network.bias:
            s = s + params[f"b[{v}]"]
        y[v] = 1.0 / (1.0 + np.exp(-s))
    return y[network.output_layer]


@pytest.mark.parametrize(
    "network",
    [
        Network((2, 3, 2)),
        Network((3, 4, 2, 2), skips=((0, 2), (1, 3)), bias=False),
    ],
    ids=lambda n: n.describe(),
)
def test_squared_error_is_half_the_sum_over_batch_and_outputs(network):
    rng = np.random.default_rng(11)
    params = init_params(network, rng)
    x = rng.uniform(-2.0, 2.0, (5, network.sizes[0]))
    d = rng.uniform(0.0, 1.0, (5, network.sizes[-1]))
    y = _numpy_outputs(network, params, x)
    jparams = {k: jnp.asarray(v) for k, v in params.items()}

    loss = squared_error(network, jparams, jnp.asarray(x), jnp.asarray(d))
    per_example = example_losses(network, jparams, jnp.asarray(x), jnp.asarray(d))

    assert_allclose(float(loss), 0.5 * np.sum((d - y) ** 2), rtol=1e-12)
    assert_allclose(
        np.asarray(per_example), 0.5 * np.sum((d - y) ** 2, axis=1), rtol=1e-12
    )


def test_squared_error_with_zero_weights_matches_hand_computation():
    network = Network((2, 3, 2), bias=True)
    params = {k: jnp.zeros(s) for k, s in network.param_shapes().items()}
    x = jnp.ones((3, 2))
    d = jnp.ones((3, 2))

    loss = squared_error(network, params, x, d)

    # Every y = sigma(0) = 1/2, so each of the 3 * 2 errors is 1/2 and
    # E = 1/2 * 6 * (1/2)^2 = 3/4: summed over the batch, not averaged.
    assert float(loss) == 0.75


def test_forward_returns_net_inputs_and_outputs_per_layer():
    network = Network((2, 3, 1), skips=(), bias=True)
    params = init_params(network, np.random.default_rng(5))
    x = np.array([[0.5, -1.0], [2.0, 0.0]])
    jparams = {k: jnp.asarray(v) for k, v in params.items()}

    s, y = forward(network, jparams, jnp.asarray(x))

    assert len(s) == len(y) == network.n_layers
    assert_allclose(np.asarray(y[0]), x)
    expected_s1 = x @ params["W[0->1]"] + params["b[1]"]
    assert_allclose(np.asarray(s[1]), expected_s1, rtol=1e-12)
    assert_allclose(np.asarray(y[1]), 1.0 / (1.0 + np.exp(-expected_s1)), rtol=1e-12)
    assert_allclose(np.asarray(y[2]), _numpy_outputs(network, params, x), rtol=1e-12)


def test_eta_may_be_a_numpy_integer():
    result = _compare(eta=np.int64(1))

    assert result.eta == 1.0


def test_public_names_are_importable_and_listed_once():
    import gradcheck

    assert sorted(gradcheck.__all__) == sorted(gradcheck._EXPORTS)
    for name in gradcheck.__all__:
        assert getattr(gradcheck, name) is not None


def test_network_structure_is_worked_out_once_and_not_shared_out():
    network = Network((3, 4, 2), skips=((0, 2),), bias=True)

    shapes = network.param_shapes()
    shapes["W[0->1]"] = (0, 0)
    del shapes["b[2]"]

    assert network.param_shapes() == {
        "W[0->1]": (3, 4),
        "W[0->2]": (3, 2),
        "W[1->2]": (4, 2),
        "b[1]": (4,),
        "b[2]": (2,),
    }
    assert network.predecessors(2) == (0, 1)
    assert network.successors(0) == (1, 2)
    assert network.successors(2) == ()
    assert network.n_params == 12 + 6 + 8 + 4 + 2
    # Cached structure stays out of equality and hashing.
    same = Network((3, 4, 2), skips=((0, 2),), bias=True)
    assert same == network and hash(same) == hash(network)
