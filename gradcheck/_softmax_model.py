# SPDX-License-Identifier: MIT
"""A tanh layer under a softmax cross-entropy output, and mistakes in it.

The model of ``examples/tanh_softmax.py``, kept inside the package so that
the mutant catalogue runs from an installed gradcheck (``examples/`` is
not installed). The derivation here goes through the softmax Jacobian
explicitly, the way it is derived by hand before the ``p - onehot``
shortcut, so that a mistake in the Jacobian has a place to live::

    s = x @ W1 + b1,  h = tanh(s),  z = h @ W2 + b2,  p = softmax(z)
    L = -1/N sum_n log p[n, label_n]

    dL/dp = -onehot / (N p)
    dL/dz = dL/dp @ J,  J[i, j] = dp_i/dz_j = p_i (delta_ij - p_j)
    dL/ds = (dL/dz @ W2.T) * tanh'(s),  tanh'(s) = 1 - h^2

``dL/dz`` and ``dL/ds`` are probes (see :func:`gradcheck.compare_gradient`),
so a check names the step that goes wrong, not only the parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

__all__ = [
    "SoftmaxCase",
    "loss",
    "grad",
    "grad_tanh_slope_one_minus_y",
    "grad_softmax_jacobian_diagonal",
    "softmax_cases",
]

Array = NDArray[np.float64]


def loss(params, x, labels, probes=None):
    """Mean softmax cross-entropy of a tanh network, in jax.numpy."""
    s = x @ params["W1"] + params["b1"]
    if probes is not None:
        s = s + probes["dL/ds"]
    z = jnp.tanh(s) @ params["W2"] + params["b2"]
    if probes is not None:
        z = z + probes["dL/dz"]
    log_p = jax.nn.log_softmax(z, axis=-1)
    picked = jnp.take_along_axis(log_p, labels[:, None], axis=-1)
    return -jnp.mean(picked)


def _softmax(z: Array) -> Array:
    z = z - z.max(axis=1, keepdims=True)  # softmax is shift-invariant
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _tanh_slope(h: Array) -> Array:
    return 1.0 - h**2


def _softmax_backward(p: Array, dl_dp: Array) -> Array:
    # J[n, i, j] = p_i (delta_ij - p_j), per example.
    eye = np.eye(p.shape[1])
    jacobian = p[:, :, None] * (eye[None] - p[:, None, :])
    return np.einsum("ni,nij->nj", dl_dp, jacobian)


def _derive(params, x, labels, tanh_slope, softmax_backward):
    n = len(x)
    h = np.tanh(x @ params["W1"] + params["b1"])
    p = _softmax(h @ params["W2"] + params["b2"])
    onehot = np.eye(p.shape[1])[labels]

    dl_dp = -np.divide(onehot, n * p, out=np.zeros_like(p), where=onehot > 0)
    dl_dz = softmax_backward(p, dl_dp)
    dl_ds = (dl_dz @ params["W2"].T) * tanh_slope(h)
    grads = {
        "W1": x.T @ dl_ds,
        "b1": dl_ds.sum(axis=0),
        "W2": h.T @ dl_dz,
        "b2": dl_dz.sum(axis=0),
    }
    return grads, {"dL/dz": dl_dz, "dL/ds": dl_ds}


def grad(params, x, labels):
    """The hand-derived gradient of :func:`loss`, with its two probes."""
    return _derive(params, x, labels, _tanh_slope, _softmax_backward)


def _tanh_slope_one_minus_y(h: Array) -> Array:
    return 1.0 - h  # tanh' written 1 - y, the square forgotten


def grad_tanh_slope_one_minus_y(params, x, labels):
    """tanh' written ``1 - y`` instead of ``1 - y^2``."""
    return _derive(params, x, labels, _tanh_slope_one_minus_y, _softmax_backward)


def _softmax_backward_diagonal(p: Array, dl_dp: Array) -> Array:
    # Only dp_i/dz_i = p_i (1 - p_i): the terms -p_i p_j of J left out.
    return dl_dp * p * (1.0 - p)


def grad_softmax_jacobian_diagonal(params, x, labels):
    """The softmax Jacobian reduced to its diagonal, ``p (1 - p)``."""
    return _derive(params, x, labels, _tanh_slope, _softmax_backward_diagonal)


class SoftmaxCase:
    """One generated point: params, inputs and labels, and the probe shapes."""

    def __init__(self, params: dict[str, Array], x: Array, labels: Array) -> None:
        self.params, self.x, self.labels = params, x, labels

    @property
    def data(self) -> tuple[Array, Array]:
        return (self.x, self.labels)

    @property
    def probes(self) -> dict[str, tuple[int, ...]]:
        batch = self.x.shape[0]
        return {
            "dL/dz": (batch, self.params["W2"].shape[1]),
            "dL/ds": (batch, self.params["W1"].shape[1]),
        }

    def describe(self) -> str:
        n_in, n_hidden = self.params["W1"].shape
        n_classes = self.params["W2"].shape[1]
        return f"tanh-softmax {n_in}-{n_hidden}-{n_classes}, batch {len(self.x)}"


def _arrays(
    shape: tuple[int, ...], scale: float, unique: bool = False
) -> st.SearchStrategy:
    magnitude = st.floats(scale / 20.0, scale, allow_nan=False)
    signed = st.tuples(magnitude, st.booleans()).map(lambda t: -t[0] if t[1] else t[0])
    return hnp.arrays(
        np.float64, shape, elements=signed, fill=st.nothing(), unique=unique
    )


@st.composite
def softmax_cases(draw: st.DrawFn) -> SoftmaxCase:
    """Generate 1 to 4 inputs, 1 to 5 hidden units, 2 to 4 classes, batch 1-6."""
    n_in = draw(st.integers(1, 4), label="inputs")
    n_hidden = draw(st.integers(1, 5), label="hidden units")
    n_classes = draw(st.integers(2, 4), label="classes")
    batch = draw(st.integers(1, 6), label="batch size")
    scale = 10.0 ** draw(st.floats(-1.0, 0.5), label="log10 weight scale")
    # Distinct entries: Hypothesis's simplest draw repeats one value, and
    # W2 with equal columns makes dL/dh exactly 0, hiding every mistake
    # below the output.
    params = {
        "W1": draw(_arrays((n_in, n_hidden), scale, unique=True), label="W1"),
        "b1": draw(_arrays((n_hidden,), scale, unique=True), label="b1"),
        "W2": draw(_arrays((n_hidden, n_classes), scale, unique=True), label="W2"),
        "b2": draw(_arrays((n_classes,), scale, unique=True), label="b2"),
    }
    x = draw(_arrays((batch, n_in), 2.0), label="x")
    labels = draw(
        hnp.arrays(np.int64, (batch,), elements=st.integers(0, n_classes - 1)),
        label="labels",
    )
    return SoftmaxCase(params, x, labels)
