# SPDX-License-Identifier: MIT
"""The public Hypothesis strategies: ranges, labels and shrinking."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

import gradcheck
from examples import delta_rule_mistakes as mistakes
from gradcheck import strategies as gst


@given(gst.delta_rule_cases())
def test_cases_respect_the_documented_ranges(case):
    network = case.network

    assert 0 <= network.n_layers - 2 <= 4
    assert all(1 <= n <= 8 for n in network.sizes)
    assert 1 <= case.x.shape[0] <= 8
    assert case.x.shape == (case.x.shape[0], network.sizes[0])
    assert case.d.shape == (case.x.shape[0], network.sizes[-1])
    assert ((case.d >= 0) & (case.d <= 1)).all()
    assert np.isfinite(case.x).all()
    assert 1e-3 <= case.weight_scale <= 10**1.5
    assert all(
        (np.abs(a) >= case.weight_scale / 20).all() for a in case.params.values()
    )
    assert (np.abs(case.x) >= 0.1).all()
    shapes = {name: a.shape for name, a in case.params.items()}
    assert shapes == network.param_shapes()
    assert all(np.abs(a).max() <= case.weight_scale for a in case.params.values())


def test_networks_can_draw_skips_and_no_bias():
    found = find(
        gst.networks(),
        lambda n: len(n.skips) >= 2 and not n.bias,
        settings=settings(database=None, max_examples=500),
    )

    assert len(found.skips) == 2
    assert found.n_layers == 4  # the fewest layers that allow two skips


def _smallest_failing_case(derivation):
    def is_caught(case):
        result = gradcheck.compare_delta_rule(*case.args, derivation=derivation)
        return result.verdict is gradcheck.Verdict.FAIL

    return find(
        gst.delta_rule_cases(),
        is_caught,
        settings=settings(
            database=None,
            max_examples=200,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
            deadline=None,
        ),
    )


def test_failing_case_shrinks_to_a_one_unit_network():
    smallest = _smallest_failing_case(mistakes.flipped_error_sign)

    assert smallest.network.sizes == (1, 1)
    assert smallest.x.shape[0] == 1


@pytest.mark.slow
def test_failing_case_shrinks_to_a_small_network_with_the_bug():
    # Leaving skip successors out of Suc(h) only matters when a hidden
    # layer has a skip connection, so the failure needs one to stay.
    smallest = _smallest_failing_case(mistakes.missing_skip_successors)

    # Shrinking is a local search: it ends small, though not always at the
    # global minimum (1-1-1-1 with the one skip 1->3).
    assert set(smallest.network.sizes) == {1}
    assert smallest.network.n_layers <= 5
    assert any(u >= 1 for u, _ in smallest.network.skips)
    assert smallest.x.shape[0] == 1


@given(gst.seeded_delta_rule_cases())
def test_seeded_cases_respect_the_documented_ranges(case):
    network = case.network

    assert 0 <= network.n_layers - 2 <= 4
    assert all(1 <= n <= 8 for n in network.sizes)
    assert 1 <= case.x.shape[0] <= 8
    assert case.d.shape == (case.x.shape[0], network.sizes[-1])
    assert ((case.d >= 0) & (case.d <= 1)).all()
    assert 1e-3 <= case.weight_scale <= 10**1.5
    shapes = {name: a.shape for name, a in case.params.items()}
    assert shapes == network.param_shapes()
    for a in case.params.values():
        assert (np.abs(a) >= case.weight_scale / 20).all()
        assert (np.abs(a) <= case.weight_scale).all()
    assert ((np.abs(case.x) >= 0.1) & (np.abs(case.x) <= 2)).all()


def test_seeded_cases_draw_both_signs_and_distinct_entries():
    network = gradcheck.Network((8, 8, 8))
    case = find(
        gst.seeded_delta_rule_cases(st.just(network)),
        lambda c: c.x.shape[0] == 8,
        settings=settings(database=None, max_examples=200),
    )

    weights = case.params["W[0->1]"]
    assert (weights > 0).any() and (weights < 0).any()
    assert np.unique(weights).size == weights.size
    assert (case.x > 0).any() and (case.x < 0).any()
