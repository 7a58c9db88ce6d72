# SPDX-License-Identifier: MIT
"""Repeated general checks of one loss compile once."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from gradcheck import Verdict, _gradient, compare_gradient, compare_vjp


def loss(params, x):
    return jnp.sum(jnp.tanh(x @ params["W"]) ** 2)


def grad(params, x):
    h = np.tanh(x @ params["W"])
    return {"W": x.T @ (2 * h * (1 - h**2))}


def test_same_loss_at_new_points_reuses_the_compiled_references():
    rng = np.random.default_rng(0)
    compare_gradient(
        loss, grad, {"W": rng.normal(size=(3, 2))}, rng.normal(size=(4, 3))
    )
    before = _gradient._compiled.cache_info()

    results = [
        compare_gradient(
            loss, grad, {"W": rng.normal(size=(3, 2))}, rng.normal(size=(4, 3))
        )
        for _ in range(3)
    ]

    after = _gradient._compiled.cache_info()
    assert all(r.verdict is Verdict.PASS for r in results)
    assert after.misses == before.misses
    assert after.hits == before.hits + 3


def test_new_shapes_get_their_own_compilation():
    rng = np.random.default_rng(1)
    before = _gradient._compiled.cache_info()

    compare_gradient(
        loss, grad, {"W": rng.normal(size=(5, 2))}, rng.normal(size=(4, 5))
    )

    assert _gradient._compiled.cache_info().misses == before.misses + 1


def test_vjp_checks_share_one_loss_across_cotangents():
    def f(x):
        return jnp.sin(x) * 2.0

    def vjp(x, c):
        return 2.0 * np.cos(x) * c

    before = _gradient._compiled.cache_info()

    result = compare_vjp(f, vjp, np.array([0.1, 0.2, 0.3]), n_cotangents=3)

    assert result.verdict is Verdict.PASS
    assert _gradient._compiled.cache_info().misses == before.misses + 1
