# SPDX-License-Identifier: MIT
"""Small problems that the Taylor-remainder and step-sweep tests share."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from gradcheck import Network, init_params

NET = Network((2, 3, 2, 1), skips=((1, 3),), bias=True)


def mlp_loss(params, x, t):
    h = jnp.tanh(x @ params["W1"])
    return 0.5 * jnp.sum((h @ params["W2"] - t) ** 2)


def mlp_grad(params, x, t):
    h = np.tanh(x @ params["W1"])
    r = h @ params["W2"] - t
    return {"W1": x.T @ ((r @ params["W2"].T) * (1 - h**2)), "W2": h.T @ r}


def mlp_problem():
    rng = np.random.default_rng(4)
    params = {"W1": rng.normal(size=(3, 4)), "W2": rng.normal(size=(4, 2))}
    return params, rng.normal(size=(5, 3)), rng.normal(size=(5, 2))


def delta_case(seed=0):
    rng = np.random.default_rng(seed)
    params = init_params(NET, rng)
    return params, rng.uniform(-2, 2, (4, 2)), rng.uniform(0, 1, (4, 1))


def mlp_grad_one_entry_off(params, x, t):
    """``mlp_grad`` with ``W2[1, 0]`` off by 1e-3."""
    g = mlp_grad(params, x, t)
    g["W2"][1, 0] += 1e-3
    return g
