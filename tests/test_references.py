# SPDX-License-Identifier: MIT
"""The references and their rounding allowance, on cases that once went wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gradcheck import Network, Verdict, compare_delta_rule, delta_rule
from gradcheck._references import compute_references

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
