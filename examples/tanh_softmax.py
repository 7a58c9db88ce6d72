# SPDX-License-Identifier: MIT
"""A tanh hidden layer under a softmax cross-entropy output, derived by hand.

The loss is the mean cross-entropy over a batch::

    h = tanh(x @ W1 + b1)            (batch, hidden)
    z = h @ W2 + b2                  (batch, classes)
    p = softmax(z)
    L = -1/N * sum_n log p[n, label_n]

and the derivation, in numpy, is the classic one: ``dL/dz = (p - onehot)
/ N``, then back through ``W2`` and ``tanh' = 1 - h^2``.

``grad_summed`` is its buggy twin: it forgets the ``1/N`` of the mean, so
every entry is exactly N times too large, and gradcheck names it a
mean-versus-sum mistake. Check both with::

    import gradcheck
    from examples import tanh_softmax as ex

    params, x, labels = ex.example_problem()
    gradcheck.check_gradient(ex.loss, ex.grad, params, x, labels, batch_size=len(x))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def loss(params, x, labels):
    """Mean softmax cross-entropy of a tanh network, in jax.numpy."""
    h = jnp.tanh(x @ params["W1"] + params["b1"])
    z = h @ params["W2"] + params["b2"]
    log_p = jax.nn.log_softmax(z, axis=-1)
    picked = jnp.take_along_axis(log_p, labels[:, None], axis=-1)
    return -jnp.mean(picked)


def _backward(params, x, labels, scale):
    h = np.tanh(x @ params["W1"] + params["b1"])
    z = h @ params["W2"] + params["b2"]
    z = z - z.max(axis=1, keepdims=True)  # softmax is shift-invariant
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    onehot = np.eye(z.shape[1])[labels]

    dz = (p - onehot) * scale
    dh = dz @ params["W2"].T
    ds = dh * (1.0 - h**2)  # tanh'(s) = 1 - tanh(s)^2
    return {
        "W1": x.T @ ds,
        "b1": ds.sum(axis=0),
        "W2": h.T @ dz,
        "b2": dz.sum(axis=0),
    }


def grad(params, x, labels):
    """The hand-derived gradient of :func:`loss`."""
    return _backward(params, x, labels, scale=1.0 / len(x))


def grad_summed(params, x, labels):
    """The buggy twin: the 1/N of the mean forgotten."""
    return _backward(params, x, labels, scale=1.0)


def example_problem(seed: int = 0, batch: int = 8):
    """Return ``(params, x, labels)``: 5 inputs, 4 hidden units, 3 classes."""
    rng = np.random.default_rng(seed)
    params = {
        "W1": rng.normal(0.0, 0.5, (5, 4)),
        "b1": rng.normal(0.0, 0.1, 4),
        "W2": rng.normal(0.0, 0.5, (4, 3)),
        "b2": rng.normal(0.0, 0.1, 3),
    }
    x = rng.normal(size=(batch, 5))
    labels = rng.integers(0, 3, size=batch)
    return params, x, labels
