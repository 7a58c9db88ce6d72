# SPDX-License-Identifier: MIT
"""Step sweeps: the central difference's error traces a V against its step."""

from __future__ import annotations

import numpy as np
from evidence_problems import (
    NET,
    delta_case,
    mlp_grad,
    mlp_grad_one_entry_off,
    mlp_loss,
    mlp_problem,
)

from gradcheck import (
    Verdict,
    compare_delta_rule,
    compare_gradient,
)
from gradcheck._sweeps import MAX_SWEPT, SWEEP_STEPS
from gradcheck.mutants import get


def _assert_v_shape(errors):
    errors = np.asarray(errors)
    bottom = int(np.argmin(errors))
    # The bottom lies inside the sweep, between 1e-7 and 1e-3 relative,
    # and both arms are far above it: truncation on the left, rounding on
    # the right.
    assert 1e-7 <= SWEEP_STEPS[bottom] <= 1e-3
    assert errors[0] > 1e3 * errors[bottom]
    assert errors[-1] > 1e3 * errors[bottom]
    # Truncation falls smoothly, decade by decade; rounding is noisy but
    # grows on the whole.
    assert (np.diff(errors[: bottom - 1 : 2]) < 0).all()
    assert errors[-1] > errors[min(bottom + 4, errors.size - 1) - 2]


def test_passing_gradient_sweeps_its_worst_entry_with_a_v_shape():
    params, x, t = mlp_problem()

    result = compare_gradient(mlp_loss, mlp_grad, params, x, t)

    assert result.verdict is Verdict.PASS
    assert len(result.sweeps) == 1
    sweep = result.sweeps[0]
    assert sweep.steps == SWEEP_STEPS
    assert SWEEP_STEPS[0] == 1e-1 and abs(SWEEP_STEPS[-1] - 1e-13) < 1e-25
    _assert_v_shape(sweep.vs_autodiff)
    _assert_v_shape(sweep.vs_analytic)


def test_wrong_entry_sweeps_flat_at_its_error_where_autodiff_dips():
    params, x, t = mlp_problem()

    result = compare_gradient(mlp_loss, mlp_grad_one_entry_off, params, x, t)

    sweep = result.sweeps[0]
    best = sweep.steps.index(sweep.best_step)
    assert sweep.entry == "W2[1,0]"
    assert min(sweep.vs_autodiff) < 1e-8
    # At the bottom of autodiff's V, the analytic value is off by its error.
    assert abs(sweep.vs_analytic[best] - 1e-3) < 1e-8


def test_failing_check_sweeps_up_to_three_entries_outside_their_band():
    params, x, d = delta_case()

    result = compare_delta_rule(
        NET, params, x, d, 0.1, get("half-forgotten").derivation
    )

    assert result.verdict is Verdict.FAIL
    assert len(result.sweeps) == MAX_SWEPT
    for sweep in result.sweeps:
        best = sweep.steps.index(sweep.best_step)
        assert abs(sweep.analytic - sweep.autodiff) > sweep.band
        assert sweep.vs_analytic[best] > 100 * sweep.vs_autodiff[best]


def test_delta_rule_sweeps_theta_through_its_probe():
    params, x, d = delta_case()

    result = compare_delta_rule(
        NET, params, x, d, 0.1, get("output-slope-missing").derivation
    )

    entries = [s.entry for s in result.sweeps]
    assert result.first_wrong == "theta[3]"
    assert any(e.startswith("theta[3]") for e in entries)
    theta = next(s for s in result.sweeps if s.entry.startswith("theta[3]"))
    _assert_v_shape(theta.vs_autodiff)


def test_sweeps_are_in_to_dict_and_can_be_switched_off():
    params, x, d = delta_case()

    data = compare_delta_rule(NET, params, x, d).to_dict()
    off = compare_delta_rule(NET, params, x, d, sweeps=False)

    assert len(data["sweeps"]) == 1
    assert set(data["sweeps"][0]) >= {"entry", "steps", "vs_autodiff", "best_step"}
    assert off.sweeps == ()
