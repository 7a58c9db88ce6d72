# SPDX-License-Identifier: MIT
"""The command line: exit codes, written files, messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gradcheck.cli import main


def test_report_passes_and_writes_files(tmp_path, capsys):
    code = main(["report", "--count", "2", "--no-digits", "-q", "--out", str(tmp_path)])

    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["counts"]["checks"] == 2
    assert results["counts"]["fail"] == 0
    assert (tmp_path / "index.html").read_text().startswith("<!")
    assert "2 checks: 2 passed, 0 failed" in capsys.readouterr().out


def test_report_fails_on_wrong_derivation_and_names_quantity(tmp_path, capsys):
    code = main(
        [
            "report",
            "--count",
            "2",
            "--no-digits",
            "-q",
            "--derivation",
            "examples.delta_rule_mistakes:flipped_error_sign",
            "--out",
            str(tmp_path),
        ]
    )

    assert code == 1
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["counts"]["fail"] == 2
    assert all(c["first_wrong"].startswith("dE/dy[") for c in results["checks"])
    assert "first wrong quantities: dE/dy[" in capsys.readouterr().out


@pytest.mark.parametrize(
    "target",
    ["no_such_module_xyz:backprop", "examples.delta_rule_mistakes:nope", "nocolon"],
    ids=["unknown-module", "unknown-function", "malformed"],
)
def test_report_rejects_unknown_derivation(tmp_path, capsys, target):
    code = main(["report", "--derivation", target, "--out", str(tmp_path)])

    assert code == 2
    assert repr(target) in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_report_rejects_negative_count(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--count", "-3"])

    assert exit_info.value.code == 2
    assert "expected 0 or more, got -3" in capsys.readouterr().err


def test_python_dash_m_runs(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "gradcheck", "report", "--count", "1", "--no-digits"]
        + ["--no-shrink", "-q", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "index.html").exists()
