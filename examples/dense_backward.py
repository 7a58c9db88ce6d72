# SPDX-License-Identifier: MIT
"""One layer's backward pass, written by hand: ``y = tanh(x @ W + b)``.

``backward(inputs, cotangent)`` takes the upstream gradient ``dL/dy`` and
returns ``dL/dx``, ``dL/dW`` and ``dL/db``: the vector-Jacobian product of
the layer. ``backward_transposed`` is its buggy twin, which writes the
weight gradient as ``delta.T @ x`` instead of ``x.T @ delta``. With a square
W the shapes agree, so only the values can reveal it, and gradcheck names
the transpose. Check both with::

    import gradcheck
    from examples import dense_backward as ex

    gradcheck.check_vjp(ex.forward, ex.backward, ex.example_inputs())
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def forward(inputs):
    """The layer, in jax.numpy: ``tanh(x @ W + b)``."""
    return jnp.tanh(inputs["x"] @ inputs["W"] + inputs["b"])


def _backward(inputs, cotangent, transpose_dw):
    x, w, b = inputs["x"], inputs["W"], inputs["b"]
    y = np.tanh(x @ w + b)
    delta = cotangent * (1.0 - y**2)
    dw = delta.T @ x if transpose_dw else x.T @ delta
    return {"x": delta @ w.T, "W": dw, "b": delta.sum(axis=0)}


def backward(inputs, cotangent):
    """The hand-derived backward pass of :func:`forward`."""
    return _backward(inputs, cotangent, transpose_dw=False)


def backward_transposed(inputs, cotangent):
    """The buggy twin: the weight gradient transposed."""
    return _backward(inputs, cotangent, transpose_dw=True)


def example_inputs(seed: int = 0, batch: int = 6, width: int = 4):
    """Return ``{"x", "W", "b"}`` with a square ``W`` of side ``width``."""
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(size=(batch, width)),
        "W": rng.normal(0.0, 0.7, (width, width)),
        "b": rng.normal(0.0, 0.1, width),
    }
