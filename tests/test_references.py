# SPDX-License-Identifier: MIT
"""The references and their rounding allowance, on cases that once went wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings

from gradcheck import Network, Verdict, compare_delta_rule, delta_rule
from gradcheck import _references as references
from gradcheck import strategies as gst
from gradcheck._references import (
    CHUNK_ROWS,
    N_PADDED_PARAMS,
    PADDED_BATCH,
    PADDED_LAYERS,
    PADDED_WIDTH,
    SMALL_ROWS,
    compute_references,
    fits_padded,
)

DATA = Path(__file__).parent / "data"


def test_equal_examples_with_targets_near_outputs_pass():
    # A generated case with targets within 1e-12 of the outputs, where
    # dE/dW[0->1][2,3] sums two equal terms over the batch (equal inputs,
    # and unit 3 has y = 0.5 in every example). Random-sign perturbations
    # cancelled exactly between them, the rounding allowance came out near
    # zero, and the references, which differ by an ulp of y, were judged to
    # disagree (inconclusive).
    data = np.load(DATA / "equal_rows_near_target.npz")
    network = Network((8, 6), bias=True)
    params = {name: data[name.replace("->", "_")] for name in network.param_shapes()}
    assert data["x"][0, 2] == data["x"][1, 2]

    result = compare_delta_rule(network, params, data["x"], data["d"], eta=1.0)

    assert result.verdict is Verdict.PASS


def test_rounding_allowance_follows_operands_not_result():
    # d - y with d close to y is known to about eps * |y|, so the allowance
    # for dE/dy must be near 1e-16 even though dE/dy itself is near 1e-12.
    network = Network((2, 1), bias=False)
    params = {"W[0->1]": np.array([[0.3], [-0.2]])}
    x = np.array([[1.0, 2.0]])
    y = delta_rule(network, params, x, np.zeros((1, 1)), 1.0)["dE/dy[1]"]
    d = y + 1e-12

    refs = compute_references(network, params, x, d, 1.0)

    rounding = refs["dE/dy[1]"].rounding[0, 0]
    assert 1e-17 < rounding < 1e-14


def test_references_are_repeatable():
    network = Network((3, 2, 1), skips=((0, 2),))
    rng = np.random.default_rng(4)
    params = {n: rng.normal(size=s) for n, s in network.param_shapes().items()}
    x, d = rng.normal(size=(2, 3)), rng.uniform(size=(2, 1))

    first = compute_references(network, params, x, d, 0.1)
    second = compute_references(network, params, x, d, 0.1)

    for name, ref in first.items():
        assert (ref.autodiff == second[name].autodiff).all()
        assert (ref.numeric.value == second[name].numeric.value).all()
        assert (ref.rounding == second[name].rounding).all()


# The padded path serves every small architecture with one compiled
# function; it must give the plain path's references, up to the order in
# which XLA sums (ulps), and read back real entries only.
PADDED_CASES = [
    (Network((1, 1), bias=False), 1),
    (Network((3, 2, 1), skips=((0, 2),), bias=True), 4),
    (Network((2, 3, 3, 2), skips=((0, 3), (1, 3)), bias=False), 8),
    (Network((8, 1, 8, 2, 3, 8), skips=((0, 5), (2, 4)), bias=True), 3),
]


def _draw_case(network, batch, seed):
    rng = np.random.default_rng(seed)
    params = {
        name: rng.choice([-1.0, 1.0], shape) * rng.uniform(0.05, 2.0, shape)
        for name, shape in network.param_shapes().items()
    }
    x = rng.normal(size=(batch, network.sizes[0]))
    d = rng.uniform(size=(batch, network.sizes[-1]))
    return params, x, d


def assert_same_references(fast, plain):
    assert list(fast) == list(plain)
    for name, ref in plain.items():
        other = fast[name]
        scale = float(np.max(np.abs(ref.autodiff)))
        ulps = 32 * np.finfo(np.float64).eps * scale
        assert other.autodiff.shape == ref.autodiff.shape, name
        assert other.numeric.value.shape == ref.numeric.value.shape, name
        assert np.shape(other.rounding) == np.shape(ref.rounding), name
        np.testing.assert_allclose(other.autodiff, ref.autodiff, rtol=0, atol=ulps)
        np.testing.assert_allclose(other.rounding, ref.rounding, rtol=0, atol=ulps)
        # Steps follow the point: dy/ds is differentiated at s, which
        # itself may differ by ulps.
        np.testing.assert_allclose(other.numeric.step, ref.numeric.step, rtol=1e-14)
        # Finite differences divide the loss's last bits by the step: the
        # two paths' values agree to a small part of their error estimate,
        # and the estimates, whose |D(h/2) - D(h)| part is itself rounding
        # noise here, agree to within a factor.
        gap = np.abs(other.numeric.value - ref.numeric.value)
        assert (gap <= 0.25 * ref.numeric.error).all(), name
        np.testing.assert_allclose(other.numeric.error, ref.numeric.error, rtol=0.5)


@pytest.mark.parametrize(
    ("network", "batch"), PADDED_CASES, ids=[n.describe() for n, _ in PADDED_CASES]
)
def test_padded_path_gives_the_plain_references(network, batch):
    params, x, d = _draw_case(network, batch, seed=batch)
    assert fits_padded(network, batch)

    fast = compute_references(network, params, x, d, 0.5, padded=True)
    plain = compute_references(network, params, x, d, 0.5, padded=False)

    assert_same_references(fast, plain)


def test_default_path_is_the_padded_one_for_small_networks_only():
    small = Network((3, 2, 1))
    deep = Network((1,) * (PADDED_LAYERS + 1))
    wide = Network((PADDED_WIDTH + 1, 1))

    assert fits_padded(small, PADDED_BATCH)
    assert not fits_padded(small, PADDED_BATCH + 1)
    assert not fits_padded(deep, 1)
    assert not fits_padded(wide, 1)


def test_wide_network_on_plain_path_passes():
    network = Network((PADDED_WIDTH + 2, 3), bias=True)
    params, x, d = _draw_case(network, 2, seed=5)

    result = compare_delta_rule(network, params, x, d, eta=0.1)

    assert result.verdict is Verdict.PASS


def test_padded_functions_compile_once_for_every_architecture():
    # Row counts, not architectures, decide what compiles: one network
    # with few parameters, one with a chunk's worth and one with several
    # chunks compile everything there is to compile.
    warm_up = [Network((2, 2, 1)), Network((8, 8, 1)), Network((8, 8, 8, 8))]
    for network in warm_up:
        compute_references(network, *_draw_case(network, 1, 0), 0.1)
    before = references.padded_traces
    networks = [
        Network((1, 3, 2), skips=((0, 2),), bias=False),
        Network((3, 1, 1, 2), bias=True),
        Network((2, 1, 2, 1, 1), skips=((0, 4), (1, 3))),
        Network((5, 7, 6, 4), skips=((0, 3),), bias=True),
        Network((8, 8, 8, 8, 8, 8), skips=((0, 5), (1, 4)), bias=False),
    ]

    for batch, network in enumerate(networks, start=1):
        compute_references(network, *_draw_case(network, batch, batch), 0.1)

    assert {4 * n.n_params > SMALL_ROWS for n in networks} == {True, False}
    assert max(4 * n.n_params for n in networks) > 2 * CHUNK_ROWS
    assert references.padded_traces == before


def test_layout_reads_back_each_real_entry_once():
    for network, _ in PADDED_CASES:
        layout = references._Layout.of(network)

        assert layout.z.size == network.n_params
        assert len(set(layout.z.tolist())) == network.n_params
        assert layout.z.min() >= 0 and layout.z.max() < N_PADDED_PARAMS
        n_cols = sum(network.sizes[1:]) + network.sizes[-1]
        assert len(set(layout.cols.tolist())) == layout.cols.size == n_cols


def test_padding_contributes_nothing_to_the_loss():
    # One unit in, one out, one example: everything else in the padded
    # arrays is padding. The references must be those of this tiny network
    # in closed form: E = (d - y)^2 / 2 with y = sigmoid(w x).
    network = Network((1, 1), bias=False)
    w, x, d = 0.7, 1.3, 0.2
    y = 1.0 / (1.0 + np.exp(-w * x))

    refs = compute_references(
        network, {"W[0->1]": np.array([[w]])}, np.array([[x]]), np.array([[d]]), 1.0
    )

    slope = y * (1.0 - y)
    expected = {
        "dE/dy[1]": y - d,
        "dy/ds[1]": slope,
        "theta[1]": (d - y) * slope,
        "dE/dW[0->1]": -(d - y) * slope * x,
        "Delta W[0->1]": (d - y) * slope * x,
    }
    assert list(refs) == list(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(refs[name].autodiff.ravel(), [value], rtol=1e-14)
        np.testing.assert_allclose(refs[name].numeric.value.ravel(), [value], rtol=1e-9)


@pytest.mark.slow
@settings(max_examples=30)
@given(gst.delta_rule_cases())
def test_padded_path_gives_the_plain_references_on_generated_cases(case):
    assume(fits_padded(case.network, case.x.shape[0]))

    fast = compute_references(*case.args, padded=True)
    plain = compute_references(*case.args, padded=False)

    assert_same_references(fast, plain)
