# SPDX-License-Identifier: MIT
"""The derivations in examples/: right ones pass, buggy twins are named."""

from __future__ import annotations

import pytest

from examples import dense_backward, tanh_softmax
from gradcheck import (
    GradientMismatchError,
    Verdict,
    check_gradient,
    check_vjp,
    compare_gradient,
    compare_vjp,
)


def test_tanh_softmax_gradient_passes():
    params, x, labels = tanh_softmax.example_problem()

    result = check_gradient(
        tanh_softmax.loss, tanh_softmax.grad, params, x, labels, batch_size=len(x)
    )

    assert result.verdict is Verdict.PASS
    assert {q.name for q in result.quantities} == {"W1", "b1", "W2", "b2"}


def test_tanh_softmax_summed_twin_is_named_a_mean_versus_sum_mistake():
    params, x, labels = tanh_softmax.example_problem(batch=8)

    result = compare_gradient(
        tanh_softmax.loss, tanh_softmax.grad_summed, params, x, labels, batch_size=8
    )

    assert result.verdict is Verdict.FAIL
    for q in result.quantities:
        assert q.signature.kind == "batch-mean"
        assert q.signature.factor == pytest.approx(8.0)
        assert "8 is the batch size" in q.signature.message


def test_dense_backward_passes():
    result = check_vjp(
        dense_backward.forward, dense_backward.backward, dense_backward.example_inputs()
    )

    assert result.verdict is Verdict.PASS
    assert len(result.quantities) == 9  # x, W and b under three cotangents


def test_dense_backward_transposed_twin_is_named_a_transpose():
    inputs = dense_backward.example_inputs()

    result = compare_vjp(
        dense_backward.forward, dense_backward.backward_transposed, inputs
    )

    assert result.first_wrong == "W @ c0"
    wrong = [q for q in result.quantities if q.verdict is Verdict.FAIL]
    assert {q.name.split(" @ ")[0] for q in wrong} == {"W"}
    assert all(q.signature.kind == "transpose" for q in wrong)
    with pytest.raises(GradientMismatchError, match="only after transposing"):
        check_vjp(dense_backward.forward, dense_backward.backward_transposed, inputs)
