# SPDX-License-Identifier: MIT
"""The calibration run, tiny: every condition and threshold gets measured."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.calibrate import main
from gradcheck._calibrate import CONDITIONS, THRESHOLDS


@pytest.mark.slow
def test_tiny_calibration_counts_every_condition_and_writes_files(tmp_path, capsys):
    code = main(["--count", "1", "--threshold-count", "1", "--out", str(tmp_path)])

    assert code == 0
    data = json.loads((tmp_path / "calibration.json").read_text())
    alarms = data["false_alarms"]
    assert set(alarms) == {c.name for c in CONDITIONS}
    assert all(sum(row["counts"].values()) == 1 for row in alarms.values())
    # A right derivation exactly at its kinks is not differentiable there.
    assert alarms["kinks-at"]["counts"]["not-differentiable"] == 1
    assert all(row["counts"]["fail"] == 0 for row in alarms.values())
    thresholds = data["thresholds"]
    assert set(thresholds) == {name for name, _ in THRESHOLDS}
    for row in thresholds.values():
        for mode in ("one-entry", "whole-gradient"):
            assert 0 < row[mode]["median"] < 1 and math.isfinite(row[mode]["median"])
    assert (
        thresholds["mlp-float64"]["one-entry"]["median"]
        < (thresholds["mlp-float32"]["one-entry"]["median"])
    )
    assert "gradcheck calibration" in (tmp_path / "index.html").read_text()
    assert "delta-float32" in capsys.readouterr().out
