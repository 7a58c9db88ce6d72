# SPDX-License-Identifier: MIT
"""Misbehaving functions are named, not reported as discrepancies."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from gradcheck import (
    InputMutationError,
    MisbehavingFunctionError,
    Network,
    NondeterministicLossError,
    Verdict,
    compare_delta_rule,
    compare_gradient,
    compare_vjp,
    delta_rule,
    format_failure,
    init_params,
)
from gradcheck.cli import main

RNG = np.random.default_rng(0)
X = RNG.normal(size=(5, 3))
T = RNG.normal(size=(5, 2))


def loss(params, x, t):
    r = x @ params["W"] - t
    return 0.5 * jnp.sum(r**2)


def grad(params, x, t):
    return {"W": x.T @ (x @ params["W"] - t)}


def _params():
    return {"W": np.array([[0.1, -0.2], [0.3, 0.4], [-0.5, 0.6]])}


def test_loss_with_a_mask_drawn_per_call_is_named():
    draws = np.random.default_rng(1)

    def dropout_loss(params, x, t):
        mask = draws.uniform(size=x.shape) > 0.5
        r = (x * mask) @ params["W"] - t
        return 0.5 * np.sum(r**2)

    with pytest.raises(NondeterministicLossError) as info:
        compare_gradient(dropout_loss, grad, _params(), X, T)

    assert info.value.role == "loss"
    first, second = info.value.values
    assert first != second
    assert "returned different values for the same input" in str(info.value)
    assert isinstance(info.value, MisbehavingFunctionError)
    assert isinstance(info.value, ValueError)


def test_loss_that_draws_while_traced_is_named():
    # Traced once by JAX, the draw is fixed in the compiled code, but each
    # direct call draws again: the compiled and direct values differ.
    draws = np.random.default_rng(2)

    def traced_dropout(params, x, t):
        mask = jnp.asarray((draws.uniform(size=x.shape) > 0.5).astype(float))
        r = (x * mask) @ params["W"] - t
        return 0.5 * jnp.sum(r**2)

    with pytest.raises(NondeterministicLossError):
        compare_gradient(traced_dropout, grad, _params(), X, T)


def test_grad_that_updates_params_in_place_is_named():
    def updating_grad(params, x, t):
        g = grad(params, x, t)
        params["W"] -= 0.1 * g["W"]
        return g

    with pytest.raises(InputMutationError) as info:
        compare_gradient(loss, updating_grad, _params(), X, T)

    err = info.value
    assert (err.role, err.argument, err.leaf, err.n_changed) == (
        "grad",
        "params",
        "W",
        6,
    )
    assert "the grad function" in str(err)
    assert "changed its input params leaf W in place: 6 of 6 entries" in str(err)


def test_loss_that_changes_its_data_is_named():
    def scaling_loss(params, x, t):
        x *= 1.0001
        return 0.5 * np.sum((x @ params["W"] - t) ** 2)

    with pytest.raises(InputMutationError) as info:
        compare_gradient(scaling_loss, grad, _params(), X, T)

    assert info.value.role == "loss"
    assert info.value.argument == "data[0]"
    assert info.value.n_changed == X.size


def test_delta_rule_derivation_that_updates_its_weights_is_named():
    network = Network((2, 3, 1), bias=True)
    rng = np.random.default_rng(0)
    params = init_params(network, rng)
    x, d = rng.normal(size=(4, 2)), rng.uniform(size=(4, 1))

    def training_step(network, params, x, d, eta):
        q = delta_rule(network, params, x, d, eta)
        params["W[1->2]"] += q["Delta W[1->2]"]
        return q

    with pytest.raises(InputMutationError) as info:
        compare_delta_rule(network, params, x, d, 0.1, training_step)

    assert info.value.role == "derivation"
    assert (info.value.argument, info.value.leaf) == ("params", "W[1->2]")


def test_backward_pass_right_only_for_all_ones_cotangent_says_so():
    w = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])

    def f(x):
        return jnp.tanh(x @ w)

    def sum_only_vjp(x, c):
        # Uses the cotangent only through its sum: right for all ones.
        y = np.tanh(x @ w)
        return ((1 - y**2) * np.sum(c) / c.size) @ w.T

    result = compare_vjp(f, sum_only_vjp, np.array([0.2, -0.1, 0.4]))

    assert result.verdict is Verdict.FAIL
    assert result.quantity("params @ ones").verdict is Verdict.PASS
    assert result.diagnosis.startswith(
        "the backward pass is right for the all-ones cotangent but wrong for "
        "the random cotangents c0, c1, c2"
    )
    assert "likely cause: the backward pass is right for the all-ones" in (
        format_failure(result)
    )
    assert result.to_dict()["diagnosis"] == result.diagnosis


def test_cli_check_exits_2_on_a_nondeterministic_loss(tmp_path, monkeypatch, capsys):
    (tmp_path / "noisy.py").write_text(
        "import numpy as np\n\n"
        "_rng = np.random.default_rng(0)\n\n"
        "def loss(params):\n"
        "    return float(np.sum(params['w'] ** 2) + _rng.normal() * 1e-3)\n\n"
        "def grad(params):\n"
        "    return {'w': 2 * params['w']}\n"
    )
    np.savez(tmp_path / "p.npz", w=np.array([1.0, 2.0]))
    monkeypatch.syspath_prepend(tmp_path)

    code = main(
        ["check", "noisy:loss", "noisy:grad", "--params", str(tmp_path / "p.npz")]
    )

    assert code == 2
    err = capsys.readouterr().err
    assert "gradcheck: error: the loss function loss returned different values" in err


def test_cli_check_exits_2_on_a_grad_that_changes_params(tmp_path, monkeypatch, capsys):
    (tmp_path / "step.py").write_text(
        "import jax.numpy as jnp\n\n"
        "def loss(params):\n"
        "    return jnp.sum(params['w'] ** 2)\n\n"
        "def grad(params):\n"
        "    g = 2 * params['w']\n"
        "    params['w'] -= 0.1 * g\n"
        "    return {'w': g}\n"
    )
    np.savez(tmp_path / "p.npz", w=np.array([1.0, 2.0]))
    monkeypatch.syspath_prepend(tmp_path)

    code = main(
        ["check", "step:loss", "step:grad", "--params", str(tmp_path / "p.npz")]
    )

    assert code == 2
    err = capsys.readouterr().err
    assert "the grad function grad changed its input params leaf w in place" in err


def test_vjp_that_scales_its_cotangent_in_place_is_named():
    def f(x):
        return jnp.sin(x)

    def vjp(x, c):
        c *= np.cos(x)
        return c

    with pytest.raises(InputMutationError) as info:
        compare_vjp(f, vjp, np.array([0.1, 0.2, 0.3]))

    assert (info.value.role, info.value.argument) == ("vjp", "cotangent")
    assert "the vjp function" in str(info.value)
    assert "changed its input cotangent in place: 3 entries" in str(info.value)


def test_forward_function_with_a_fresh_mask_is_named():
    draws = np.random.default_rng(3)

    def f(x):
        mask = (draws.uniform(size=x.shape) > 0.3).astype(float)
        return jnp.sin(x) * jnp.asarray(mask)

    def vjp(x, c):
        return np.cos(x) * c

    with pytest.raises(NondeterministicLossError) as info:
        compare_vjp(f, vjp, np.array([0.1, 0.2, 0.3]))

    assert info.value.role == "f"
    assert "the forward function" in str(info.value)
