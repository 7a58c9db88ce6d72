# SPDX-License-Identifier: MIT
"""Known answers for the built-in delta rule, worked out by hand.

The hand computations use sigma(0) = 1/2, sigma'(0) = 1/4 and
sigma(ln 3) = 3/4, sigma'(ln 3) = 3/16, so every expected number below is
an exact binary fraction (times ln 3 at most).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from gradcheck import (
    Network,
    delta_rule,
    init_params,
    quantity_names,
    required_quantity_names,
)

LN3 = math.log(3.0)

# Exact binary fractions should come out (nearly) exactly; a few ulps of
# slack allow for tanh and log rounding.
RTOL = 1e-13
ATOL = 1e-15


def _assert_quantities(got: dict, expected: dict) -> None:
    assert list(got) == list(expected)
    for name, value in expected.items():
        assert_allclose(got[name], value, rtol=RTOL, atol=ATOL, err_msg=name)


def _stable_sigmoid(s: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(s))
    return np.where(s >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _forward(network: Network, params: dict, x: np.ndarray) -> dict:
    """Outputs y of every layer, written independently of the package."""
    y = {0: x}
    for v in range(1, network.n_layers):
        s = sum(y[u] @ params[f"W[{u}->{v}]"] for u in network.predecessors(v))
        if network.bias:
            s = s + params[f"b[{v}]"]
        y[v] = _stable_sigmoid(s)
    return y


def _random_case(network: Network, seed: int = 0, batch: int = 3) -> tuple:
    rng = np.random.default_rng(seed)
    params = init_params(network, rng)
    x = rng.uniform(-2.0, 2.0, (batch, network.sizes[0]))
    d = rng.uniform(0.0, 1.0, (batch, network.sizes[-1]))
    return params, x, d


def test_delta_rule_zero_weights_without_bias_matches_hand_computation():
    network = Network((2, 2, 1), bias=False)
    params = {"W[0->1]": np.zeros((2, 2)), "W[1->2]": np.zeros((2, 1))}
    x = np.array([[1.0, 2.0]])
    d = np.array([[1.0]])
    # Every net input is 0, so y_h = (1/2, 1/2), y_o = 1/2 and every
    # dy/ds = 1/4.
    expected = {
        # -(d - y_o) = -(1 - 1/2)
        "dE/dy[2]": [[-0.5]],
        "dy/ds[2]": [[0.25]],
        # (d - y_o) y_o (1 - y_o) = 1/2 * 1/4
        "theta[2]": [[0.125]],
        # -theta_o y_h = -1/8 * 1/2 for both hidden units
        "dE/dW[1->2]": [[-0.0625], [-0.0625]],
        # eta theta_o y_h = 1/2 * 1/8 * 1/2
        "Delta W[1->2]": [[0.03125], [0.03125]],
        "dy/ds[1]": [[0.25, 0.25]],
        # y_h (1 - y_h) theta_o W[h,o] with W[h,o] = 0
        "theta[1]": [[0.0, 0.0]],
        "dE/dW[0->1]": [[0.0, 0.0], [0.0, 0.0]],
        "Delta W[0->1]": [[0.0, 0.0], [0.0, 0.0]],
    }

    got = delta_rule(network, params, x, d, eta=0.5)

    _assert_quantities(got, expected)


def test_delta_rule_with_bias_matches_hand_computation():
    network = Network((2, 2, 1), bias=True)
    # W[1->2] = (1, -1) keeps s_o = 1/2 - 1/2 = 0 while sending a non-zero
    # error signal back to each hidden unit.
    params = {
        "W[0->1]": np.zeros((2, 2)),
        "W[1->2]": np.array([[1.0], [-1.0]]),
        "b[1]": np.zeros(2),
        "b[2]": np.zeros(1),
    }
    x = np.array([[1.0, 2.0]])
    d = np.array([[1.0]])
    expected = {
        "dE/dy[2]": [[-0.5]],
        "dy/ds[2]": [[0.25]],
        "theta[2]": [[0.125]],
        # -theta_o y_h = -1/8 * 1/2
        "dE/dW[1->2]": [[-0.0625], [-0.0625]],
        # -theta_o
        "dE/db[2]": [-0.125],
        "Delta W[1->2]": [[0.03125], [0.03125]],
        # eta theta_o = 1/2 * 1/8
        "Delta b[2]": [0.0625],
        "dy/ds[1]": [[0.25, 0.25]],
        # 1/4 * 1/8 * W[h,o] = 1/32 * (1, -1)
        "theta[1]": [[0.03125, -0.03125]],
        # -theta_h x_i: row i is -x_i * (1/32, -1/32), x = (1, 2)
        "dE/dW[0->1]": [[-0.03125, 0.03125], [-0.0625, 0.0625]],
        "dE/db[1]": [-0.03125, 0.03125],
        "Delta W[0->1]": [[0.015625, -0.015625], [0.03125, -0.03125]],
        "Delta b[1]": [0.015625, -0.015625],
    }

    got = delta_rule(network, params, x, d, eta=0.5)

    _assert_quantities(got, expected)


def test_delta_rule_away_from_zero_matches_hand_computation():
    network = Network((2, 2, 1), bias=False)
    # s_h = (ln 3, 0), so y_h = (3/4, 1/2); s_o = 1/2 * 2 ln 3 = ln 3, so
    # y_o = 3/4 and dy_o/ds_o = 3/4 * 1/4 = 3/16.
    params = {
        "W[0->1]": np.array([[LN3, 0.0], [0.0, 0.0]]),
        "W[1->2]": np.array([[0.0], [2.0 * LN3]]),
    }
    x = np.array([[1.0, 1.0]])
    d = np.array([[0.0]])
    # theta_o = (0 - 3/4) * 3/16 = -9/64 = -0.140625
    theta_o = -0.140625
    # theta_h = y_h (1 - y_h) theta_o W[h,o] = (3/16 * 0, 1/4 * 2 ln 3) theta_o
    theta_h1 = 0.25 * theta_o * 2.0 * LN3  # = -0.0703125 ln 3
    expected = {
        "dE/dy[2]": [[0.75]],
        "dy/ds[2]": [[0.1875]],
        "theta[2]": [[theta_o]],
        # -theta_o y_h = 9/64 * (3/4, 1/2)
        "dE/dW[1->2]": [[0.10546875], [0.0703125]],
        "Delta W[1->2]": [[-0.010546875], [-0.00703125]],
        "dy/ds[1]": [[0.1875, 0.25]],
        "theta[1]": [[0.0, -0.0703125 * LN3]],
        # -theta_h x_i with x = (1, 1)
        "dE/dW[0->1]": [[0.0, 0.0703125 * LN3], [0.0, 0.0703125 * LN3]],
        "Delta W[0->1]": [[0.0, 0.1 * theta_h1], [0.0, 0.1 * theta_h1]],
    }

    got = delta_rule(network, params, x, d, eta=0.1)

    _assert_quantities(got, expected)


def test_delta_rule_sums_gradients_over_the_batch():
    network = Network((2, 2, 1), bias=True)
    params = {name: np.zeros(shape) for name, shape in network.param_shapes().items()}
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    d = np.array([[1.0], [0.5]])
    # Example 1: theta_o = 1/2 * 1/4 = 1/8; example 2: d = y_o, so 0.

    got = delta_rule(network, params, x, d, eta=1.0)

    assert_allclose(got["theta[2]"], [[0.125], [0.0]], rtol=RTOL, atol=ATOL)
    # -(1/8 + 0), and -(1/8 * 1/2 + 0 * 1/2) per hidden unit
    assert_allclose(got["dE/db[2]"], [-0.125], rtol=RTOL, atol=ATOL)
    assert_allclose(got["dE/dW[1->2]"], [[-0.0625], [-0.0625]], rtol=RTOL, atol=ATOL)


def test_quantity_names_list_output_layer_first():
    network = Network((2, 2, 1), bias=True)

    names = quantity_names(network)

    assert names == [
        "dE/dy[2]",
        "dy/ds[2]",
        "theta[2]",
        "dE/dW[1->2]",
        "dE/db[2]",
        "Delta W[1->2]",
        "Delta b[2]",
        "dy/ds[1]",
        "theta[1]",
        "dE/dW[0->1]",
        "dE/db[1]",
        "Delta W[0->1]",
        "Delta b[1]",
    ]


def test_quantity_names_include_skip_edges_in_predecessor_order():
    network = Network((2, 3, 2, 1), skips=((0, 2), (1, 3)), bias=False)

    names = quantity_names(network)

    assert names == [
        "dE/dy[3]",
        "dy/ds[3]",
        "theta[3]",
        "dE/dW[1->3]",
        "dE/dW[2->3]",
        "Delta W[1->3]",
        "Delta W[2->3]",
        "dy/ds[2]",
        "theta[2]",
        "dE/dW[0->2]",
        "dE/dW[1->2]",
        "Delta W[0->2]",
        "Delta W[1->2]",
        "dy/ds[1]",
        "theta[1]",
        "dE/dW[0->1]",
        "Delta W[0->1]",
    ]


def test_required_quantity_names_are_the_gradient_of_every_parameter():
    network = Network((2, 3, 2, 1), skips=((1, 3),), bias=True)

    required = required_quantity_names(network)

    assert required == [f"dE/d{name}" for name in network.param_shapes()]
    assert set(required) <= set(quantity_names(network))


def test_delta_rule_returns_every_quantity_in_order_with_documented_shapes():
    network = Network((3, 4, 2), skips=(), bias=True)
    params, x, d = _random_case(network, batch=5)

    got = delta_rule(network, params, x, d, eta=0.1)

    assert list(got) == quantity_names(network)
    assert got["dE/dy[2]"].shape == (5, 2)
    for v in (1, 2):
        assert got[f"dy/ds[{v}]"].shape == (5, network.sizes[v])
        assert got[f"theta[{v}]"].shape == (5, network.sizes[v])
        assert got[f"dE/db[{v}]"].shape == (network.sizes[v],)
    for name, shape in network.param_shapes().items():
        assert got[f"dE/d{name}"].shape == shape
        assert got[f"Delta {name}"].shape == shape


def test_hidden_theta_sums_over_successors_across_a_skip():
    network = Network((2, 3, 2, 1), skips=((1, 3),), bias=True)
    params, x, d = _random_case(network, seed=1)
    y = _forward(network, params, x)

    got = delta_rule(network, params, x, d, eta=0.1)

    # Layer 1 feeds layer 2 and, through the skip, layer 3.
    assert network.successors(1) == (2, 3)
    via_next = got["theta[2]"] @ params["W[1->2]"].T
    via_skip = got["theta[3]"] @ params["W[1->3]"].T
    slope = y[1] * (1.0 - y[1])
    assert_allclose(got["theta[1]"], slope * (via_next + via_skip), rtol=1e-12)
    # Leaving the skip out would give a visibly different answer.
    assert not np.allclose(got["theta[1]"], slope * via_next, rtol=1e-3)


def test_output_theta_is_minus_dE_dy_times_dy_ds():
    network = Network((2, 3, 2), bias=True)
    params, x, d = _random_case(network, seed=2)
    y = _forward(network, params, x)

    got = delta_rule(network, params, x, d, eta=0.1)

    assert_allclose(got["dE/dy[2]"], -(d - y[2]), rtol=1e-12)
    assert_allclose(got["dy/ds[2]"], y[2] * (1.0 - y[2]), rtol=1e-12)
    assert_allclose(got["theta[2]"], (d - y[2]) * y[2] * (1.0 - y[2]), rtol=1e-12)


@pytest.mark.parametrize(
    "network",
    [
        Network((2, 3, 1), bias=True),
        Network((2, 3, 2, 1), skips=((0, 2), (1, 3)), bias=True),
        Network((1, 2, 2, 2), skips=((0, 3),), bias=False),
    ],
    ids=lambda n: n.describe(),
)
def test_weight_gradient_is_minus_theta_times_predecessor_output(network):
    params, x, d = _random_case(network, seed=3, batch=4)
    y = _forward(network, params, x)

    got = delta_rule(network, params, x, d, eta=0.1)

    for u, v in network.edges:
        expected = -(y[u].T @ got[f"theta[{v}]"])
        assert_allclose(got[f"dE/dW[{u}->{v}]"], expected, rtol=1e-12, atol=1e-15)


def test_bias_gradient_is_minus_theta_summed_over_the_batch():
    network = Network((2, 3, 2, 1), skips=((1, 3),), bias=True)
    params, x, d = _random_case(network, seed=4, batch=6)

    got = delta_rule(network, params, x, d, eta=0.1)

    for v in range(1, network.n_layers):
        expected = -got[f"theta[{v}]"].sum(axis=0)
        assert_allclose(got[f"dE/db[{v}]"], expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("eta", [0.01, 0.5, 2.0])
def test_update_is_minus_eta_times_gradient(eta):
    network = Network((2, 3, 2, 1), skips=((0, 3),), bias=True)
    params, x, d = _random_case(network, seed=5)

    got = delta_rule(network, params, x, d, eta=eta)

    for name in network.param_shapes():
        assert_allclose(
            got[f"Delta {name}"], -eta * got[f"dE/d{name}"], rtol=1e-14, atol=0.0
        )


def test_delta_rule_keeps_relative_precision_of_saturated_units():
    # A unit with s = -30 has y = sigma(s) ~ 1e-13 and dy/ds ~ 1e-13; a
    # correct float64 sigmoid knows both to about 1e-16 *relative* error,
    # and the references in _references.py do. Computing y as
    # (1 + tanh(s / 2)) / 2 cancels catastrophically for s << 0 and leaves
    # only an absolute 1e-16.
    network = Network((1, 1), bias=False)
    params = {"W[0->1]": np.array([[1.0]])}
    x = np.array([[-30.0], [-36.0]])
    d = np.array([[0.0], [0.0]])
    s = x[:, 0]
    slope = np.exp(s) / (1.0 + np.exp(s)) ** 2

    got = delta_rule(network, params, x, d, eta=0.1)

    assert_allclose(got["dy/ds[1]"][:, 0], slope, rtol=1e-10)
