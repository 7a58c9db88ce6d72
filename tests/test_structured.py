# SPDX-License-Identifier: MIT
"""The structured evaluation of shifted losses, and its place among the paths."""

from __future__ import annotations

import numpy as np
import pytest
from test_references import _draw_case, assert_same_references

from gradcheck import Network, Verdict, compare_delta_rule, mutants
from gradcheck._networks import example_losses
from gradcheck._numeric import ShiftedRows, default_steps
from gradcheck._references import compute_references, fits_padded
from gradcheck._structured import CHUNK_ELEMENTS, Point, sigmoid
from gradcheck.errors import InvalidArgumentError

# Skips into the output and into hidden layers, no biases, a batch of
# one, a layer wider than the padded shape and an output wider than its
# inputs.
CASES = [
    (Network((3, 4, 2), bias=True), 1),
    (Network((5, 9, 4, 3), skips=((0, 2), (0, 3), (1, 3)), bias=False), 5),
    (Network((4, 6, 3, 7), skips=((1, 3),), bias=True), 11),
]


def _flat(network, params):
    return np.concatenate([np.ravel(params[n]) for n in network.param_shapes()])


def _unflat(network, z):
    params, start = {}, 0
    for name, shape in network.param_shapes().items():
        size = int(np.prod(shape))
        params[name] = z[start : start + size].reshape(shape)
        start += size
    return params


@pytest.mark.parametrize(("network", "batch"), CASES, ids=lambda c: str(c))
def test_shifted_losses_match_forward_passes(network, batch):
    params, x, d = _draw_case(network, batch, seed=3)
    z = _flat(network, params)
    rows = ShiftedRows.along(z, 100 * default_steps(z))
    point = Point.at(network, params, x, d)

    losses = point.shifted_param_losses(rows.index, rows.delta)

    for k in np.random.default_rng(0).choice(len(rows), 40, replace=False):
        shifted = z.copy()
        shifted[rows.index[k]] += rows.delta[k]
        direct = example_losses(network, _unflat(network, shifted), x, d)
        np.testing.assert_allclose(losses[k], float(np.sum(direct)), rtol=1e-13)


def test_probe_losses_match_forward_passes():
    network, batch = CASES[1]
    params, x, d = _draw_case(network, batch, seed=4)
    n_cols = sum(network.sizes[1:]) + network.sizes[-1]
    columns = np.arange(n_cols)
    delta = np.linspace(-0.3, 0.3, n_cols)
    point = Point.at(network, params, x, d)

    losses = point.shifted_probe_losses(columns, delta)

    start = 0
    for v in range(1, network.n_layers + 1):
        layer = min(v, network.output_layer)
        for j in range(network.sizes[layer]):
            k = start + j
            probes_s = {
                w: np.zeros((batch, network.sizes[w]))
                for w in range(1, network.n_layers)
            }
            probe_y = np.zeros((batch, network.sizes[-1]))
            (probe_y if v == network.n_layers else probes_s[layer])[:, j] = delta[k]
            direct = example_losses(network, params, x, d, probes_s, probe_y)
            np.testing.assert_allclose(losses[k], direct, rtol=1e-13)
        start += network.sizes[layer]


def test_chunks_bound_the_arrays():
    network = Network((2, 300, 2), bias=True)
    point = Point.at(network, *_draw_case(network, 8, seed=0))

    chunks = point._chunks(np.arange(10_000), 1)

    assert max(len(c) for c in chunks) * 8 * 300 <= CHUNK_ELEMENTS
    assert sum(len(c) for c in chunks) == 10_000


def _loss_with_moved_net_input(network, params, x, d, v, ds):
    """E by a plain forward pass, with ``ds`` added to the net input of ``v``."""
    y = {0: x}
    for w in range(1, network.n_layers):
        s = sum(y[u] @ params[f"W[{u}->{w}]"] for u in network.predecessors(w))
        if network.bias:
            s = s + params[f"b[{w}]"]
        if w == v:
            s = s + ds
        y[w] = 1.0 / (1.0 + np.exp(-s))
    return 0.5 * float(np.sum((y[network.output_layer] - d) ** 2))


@pytest.mark.parametrize("chunk", [CHUNK_ELEMENTS, 64])
@pytest.mark.parametrize(("network", "batch"), CASES[1:], ids=lambda c: str(c))
def test_directional_losses_match_forward_passes(network, batch, chunk, monkeypatch):
    # Directions that start at every layer run up together, in chunks that
    # cut across layers when they are small.
    import gradcheck._structured as structured

    monkeypatch.setattr(structured, "CHUNK_ELEMENTS", chunk)
    params, x, d = _draw_case(network, batch, seed=6)
    rng = np.random.default_rng(1)
    point = Point.at(network, params, x, d)
    directions = {
        v: (
            rng.normal(size=(n, batch, network.sizes[v])),
            rng.uniform(1e-3, 1e-2, size=n),
        )
        for v, n in zip(range(1, network.n_layers), (3, 1, 2), strict=False)
    }

    losses = point.directional_losses(directions)

    assert losses.shape == (4, sum(q.shape[0] for q, _ in directions.values()))
    column = 0
    for v in sorted(directions):
        q, h = directions[v]
        for i in range(q.shape[0]):
            for j, t in enumerate((h[i], -h[i], h[i] / 2, -h[i] / 2)):
                direct = _loss_with_moved_net_input(network, params, x, d, v, t * q[i])
                assert losses[j, column] == pytest.approx(direct, rel=1e-13)
            column += 1
    # Kept working arrays do not leak into the next evaluation.
    again = point.directional_losses(directions)
    np.testing.assert_array_equal(again, losses)


def test_sigmoid_keeps_saturated_tails():
    s = np.array([-800.0, -40.0, 0.0, 40.0])

    y = sigmoid(s.copy())

    assert y[0] == 0.0
    np.testing.assert_allclose(y[1], np.exp(-40.0) / (1 + np.exp(-40.0)), rtol=1e-15)
    assert y[2] == 0.5
    assert y[3] == 1.0


@pytest.mark.parametrize(("network", "batch"), CASES, ids=lambda c: str(c))
def test_structured_path_gives_the_plain_references(network, batch):
    params, x, d = _draw_case(network, batch, seed=batch)

    structured = compute_references(network, params, x, d, 0.5, path="structured")
    plain = compute_references(network, params, x, d, 0.5, path="plain")

    assert_same_references(structured, plain)


def test_references_of_some_quantities_are_those_of_all():
    network, batch = CASES[2]
    params, x, d = _draw_case(network, batch, seed=1)
    wanted = ["dE/dy[3]", "theta[2]", "dE/dW[1->3]", "Delta b[1]", "dy/ds[1]"]

    every = compute_references(network, params, x, d, 0.5, path="structured")
    some = compute_references(
        network, params, x, d, 0.5, path="structured", only=wanted
    )

    assert sorted(some) == sorted(wanted)
    # Fewer rows make other chunks, whose products may round differently.
    for name, ref in some.items():
        gap = np.abs(ref.numeric.value - every[name].numeric.value)
        assert (gap <= 0.25 * every[name].numeric.error).all(), name
        np.testing.assert_allclose(ref.numeric.error, every[name].numeric.error, 0.5)
        np.testing.assert_array_equal(ref.autodiff, every[name].autodiff)


def test_networks_outside_the_padded_shape_take_the_structured_path(monkeypatch):
    from gradcheck import _references

    network, batch = CASES[2]
    assert not fits_padded(network, batch)
    calls = []
    original = _references._evaluate_structured
    monkeypatch.setattr(
        _references,
        "_evaluate_structured",
        lambda *args: calls.append(args) or original(*args),
    )

    compute_references(network, *_draw_case(network, batch, seed=0), 0.1)

    assert len(calls) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "fast"}, r"path must be one of .* got path='fast'"),
        ({"only": ["theta[9]"]}, r"only must name quantities of .*'theta\[9\]'"),
    ],
    ids=["unknown-path", "unknown-quantity"],
)
def test_compute_references_rejects_bad_arguments(kwargs, message):
    network, batch = CASES[0]

    with pytest.raises(InvalidArgumentError, match=message):
        compute_references(network, *_draw_case(network, batch, seed=0), 0.1, **kwargs)


# Mistakes at the output, in a hidden layer and in a skip's successors,
# on a network that the padded path cannot take.
MUTANTS = ["output-slope-missing", "hidden-sum-transposed", "skip-successors-missing"]


@pytest.mark.parametrize("name", MUTANTS)
def test_structured_path_names_the_first_wrong_quantity(name):
    network = Network((5, 9, 9, 3), skips=((1, 3),), bias=True)
    params, x, d = _draw_case(network, 4, seed=2)
    mutant = mutants.get(name)
    assert not fits_padded(network, 4)

    right = compare_delta_rule(network, params, x, d, 0.5)
    wrong = compare_delta_rule(network, params, x, d, 0.5, mutant.derivation)

    assert right.verdict is Verdict.PASS
    assert wrong.verdict is Verdict.FAIL
    assert wrong.first_wrong == mutant.expected_first(network)
