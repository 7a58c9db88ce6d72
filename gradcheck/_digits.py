# SPDX-License-Identifier: MIT
"""A real case: a sigmoid network trained on scikit-learn's digits.

The digits data set (1,797 images of 8x8 pixels, ten classes) ships inside
scikit-learn, so it loads without network access. The network is trained
with the document's own update rule, ``W += Delta W`` from the built-in
delta rule, on mini-batches, and snapshots are taken along the way so
that a derivation can be checked at initialisation, midway, and at the
end, where many units have saturated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from gradcheck._delta_rule import delta_rule
from gradcheck._networks import Network, init_params

__all__ = ["Checkpoint", "DIGITS_NETWORK", "train_on_digits", "saturated_fraction"]

logger = logging.getLogger(__name__)

Array = NDArray[np.float64]

# 64 pixels in, 16 hidden units, 10 classes out, and a skip connection from
# the pixels straight to the outputs, so that Suc(input) spans two layers.
DIGITS_NETWORK = Network((64, 16, 10), skips=((0, 2),), bias=True)

# A unit counts as saturated when sigma'(s) = y (1 - y) is below this,
# that is y < 0.01 or y > 0.99.
SATURATION_SLOPE = 0.0099


@dataclass(frozen=True)
class Checkpoint:
    """A snapshot of training, with the batch to check the derivation on.

    Attributes:
        epoch: epochs of training done.
        params: the parameters at that point.
        x: the check batch's inputs, pixels scaled to [0, 1].
        d: the check batch's one-hot targets.
        details: facts for the report (loss, accuracy, saturation).
    """

    epoch: int
    params: dict[str, Array]
    x: Array
    d: Array
    details: dict[str, object] = field(default_factory=dict)


def load_digits_data() -> tuple[Array, Array]:
    """Return the digits as ``(x, d)``: pixels in [0, 1] and one-hot targets."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = np.asarray(data.data, dtype=np.float64) / 16.0
    d = np.eye(10)[data.target]
    return x, d


def saturated_fraction(network: Network, params: dict[str, Array], x: Array) -> float:
    """Return the fraction of non-input unit activations that are saturated."""
    q = delta_rule(network, params, x, np.zeros((x.shape[0], network.sizes[-1])), 1.0)
    slopes = np.concatenate(
        [q[f"dy/ds[{v}]"].ravel() for v in range(1, network.n_layers)]
    )
    return float(np.mean(slopes < SATURATION_SLOPE))


def _describe(network: Network, params: dict[str, Array], x: Array, d: Array) -> dict:
    q = delta_rule(network, params, x, d, 1.0)
    y = d + q[f"dE/dy[{network.output_layer}]"]  # dE/dy = -(d - y)
    return {
        "loss_per_example": round(float(0.5 * np.sum((d - y) ** 2) / len(x)), 5),
        "accuracy": round(float(np.mean(y.argmax(1) == d.argmax(1))), 4),
        "saturated_fraction": round(saturated_fraction(network, params, x), 4),
    }


def train_on_digits(
    epochs: int = 60,
    checkpoints: tuple[int, ...] | None = None,
    eta: float = 0.1,
    batch_size: int = 32,
    check_size: int = 48,
    seed: int = 0,
) -> list[Checkpoint]:
    """Train :data:`DIGITS_NETWORK` with the delta rule and keep snapshots.

    Args:
        epochs: passes over the training images.
        checkpoints: epochs at which to snapshot; by default the start, the
            first epoch, the middle and the end.
        eta: learning rate of the summed mini-batch loss.
        batch_size: examples per update.
        check_size: examples in the fixed batch the checks run on, held out
            from training.
        seed: seeds the initial weights, the shuffling and the split.

    Returns:
        One :class:`Checkpoint` per requested epoch, in order.
    """
    if checkpoints is None:
        checkpoints = tuple(sorted({0, min(1, epochs), epochs // 2, epochs}))
    rng = np.random.default_rng(seed)
    x_all, d_all = load_digits_data()
    order = rng.permutation(len(x_all))
    check, train = order[:check_size], order[check_size:]
    x_check, d_check = x_all[check], d_all[check]
    x_train, d_train = x_all[train], d_all[train]

    network = DIGITS_NETWORK
    params = init_params(network, rng, scale=1.0)
    snapshots = []
    for epoch in range(epochs + 1):
        if epoch in checkpoints:
            details = {"epoch": epoch, **_describe(network, params, x_check, d_check)}
            logger.info("digits checkpoint %s", details)
            snapshots.append(
                Checkpoint(
                    epoch,
                    {k: v.copy() for k, v in params.items()},
                    x_check,
                    d_check,
                    details,
                )
            )
        if epoch == epochs:
            break
        # One epoch of the document's rule: W[u,v] += eta theta_v y_u.
        for start in range(0, len(x_train), batch_size):
            idx = slice(start, start + batch_size)
            q = delta_rule(network, params, x_train[idx], d_train[idx], eta)
            for name in params:
                params[name] = params[name] + q[f"Delta {name}"]
        perm = rng.permutation(len(x_train))
        x_train, d_train = x_train[perm], d_train[perm]
    return snapshots
