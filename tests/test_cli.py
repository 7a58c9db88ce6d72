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


# ---------------------------------------------------------------------------
# gradcheck check

LOSS = "examples.tanh_softmax:loss"


@pytest.fixture
def problem(tmp_path):
    """Write the tanh-softmax example's params.npz and data.npz."""
    import numpy as np

    from examples import tanh_softmax

    params, x, labels = tanh_softmax.example_problem()
    np.savez(tmp_path / "params.npz", **params)
    np.savez(tmp_path / "data.npz", x, labels)
    return tmp_path


def _check(problem, grad, *extra):
    return main(
        ["check", LOSS, grad, "--params", str(problem / "params.npz")]
        + ["--data", str(problem / "data.npz"), "-q", *extra]
    )


def test_check_passes_and_writes_json_and_html(problem, capsys):
    code = _check(
        problem,
        "examples.tanh_softmax:grad",
        "--json",
        str(problem / "out" / "check.json"),
        "--html",
        str(problem / "report"),
    )

    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "pass: examples.tanh_softmax:grad agrees with finite differences and JAX "
        "autodiff of examples.tanh_softmax:loss on W1 (5, 4), W2 (4, 3), b1 (4,), "
        "b2 (3,)\n"
    )
    check = json.loads((problem / "out" / "check.json").read_text())
    assert check["verdict"] == "pass"
    assert check["exit_code"] == 0
    assert check["batch"] == 8
    assert {q["name"] for q in check["quantities"]} == {"W1", "b1", "W2", "b2"}
    results = json.loads((problem / "report" / "results.json").read_text())
    assert results["counts"] == {"checks": 1, "pass": 1, "fail": 0, "inconclusive": 0}
    assert results["checks"][0]["label"] == "examples.tanh_softmax:grad"
    assert (problem / "report" / "index.html").read_text().startswith("<!")


def test_check_fails_on_summed_gradient_and_names_batch_mean(problem, capsys):
    code = _check(problem, "examples.tanh_softmax:grad_summed")

    assert code == 1
    out = capsys.readouterr().out
    assert out.startswith(
        "FAIL: examples.tanh_softmax:grad_summed is wrong; first wrong quantity: W1\n"
    )
    assert (
        "gradient is wrong on W1 (5, 4), W2 (4, 3), b1 (4,), b2 (3,) (batch 8)" in out
    )
    assert (
        "likely cause: the gradient is 8 times the reference (fitted factor 8), "
        "and 8 is the batch size" in out
    )
    assert "reproduce: gradcheck check examples.tanh_softmax:loss" in out


def test_check_json_of_a_failure_holds_the_message(problem, monkeypatch):
    monkeypatch.chdir(problem)

    code = _check(problem, "examples.tanh_softmax:grad_summed", "--json", "c.json")

    check = json.loads((problem / "c.json").read_text())
    assert code == check["exit_code"] == 1
    assert check["verdict"] == "fail"
    assert check["first_wrong"] == "W1"
    assert check["message"].startswith("gradient is wrong on W1 (5, 4)")


def test_check_reads_nested_params_and_named_data(tmp_path, monkeypatch, capsys):
    import numpy as np

    module = tmp_path / "nested_loss.py"
    module.write_text(
        "import jax.numpy as jnp\n\n"
        "def loss(params, x, y):\n"
        "    return jnp.sum((x @ params['layer']['W'] - y) ** 2)\n\n"
        "def grad(params, x, y):\n"
        "    return {'layer': {'W': 2 * x.T @ (x @ params['layer']['W'] - y)}}\n"
    )
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "p.npz", **{"layer/W": rng.normal(size=(3, 2))})
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(4, 3)), y=rng.normal(size=(4, 2)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(tmp_path)

    code = main(
        ["check", "nested_loss:loss", "nested_loss:grad"]
        + ["--params", "p.npz", "--data", "d.npz", "-q"]
    )

    assert code == 0, capsys.readouterr()
    assert "on layer.W (3, 2)" in capsys.readouterr().out


@pytest.fixture
def non_scalar_loss(tmp_path, monkeypatch):
    (tmp_path / "vector_loss.py").write_text(
        "def loss(params, x, labels):\n    return x @ params['W1']\n"
    )
    monkeypatch.syspath_prepend(tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["examples.tanh_softmax:grad", "--params", "{tmp}/missing.npz"],
            "--params '{tmp}/missing.npz': no such file",
            id="missing-params",
        ),
        pytest.param(
            ["examples.tanh_softmax:grad", "--params", "{tmp}/params.npz"]
            + ["--data", "{tmp}/garbage.npz"],
            "--data '{tmp}/garbage.npz' is not a readable .npz archive",
            id="malformed-npz",
        ),
        pytest.param(
            ["examples.tanh_softmax:nope", "--params", "{tmp}/params.npz"],
            "module 'examples.tanh_softmax' has no attribute 'nope' "
            "(grad 'examples.tanh_softmax:nope')",
            id="unknown-function",
        ),
        pytest.param(
            ["no_such_module_xyz:grad", "--params", "{tmp}/params.npz"],
            "cannot import module 'no_such_module_xyz' for grad",
            id="unknown-module",
        ),
        pytest.param(
            ["examples.tanh_softmax:grad", "--params", "{tmp}/data.npz"]
            + ["--data", "{tmp}/data.npz"],
            "arr_1 must be a float array, got dtype int64",
            id="integer-params",
        ),
    ],
)
def test_check_rejects_bad_input_with_exit_2(problem, capsys, args, message):
    (problem / "garbage.npz").write_text("not an archive")
    args = [a.replace("{tmp}", str(problem)) for a in args]

    code = main(["check", LOSS, *args, "-q"])

    assert code == 2
    captured = capsys.readouterr()
    assert message.replace("{tmp}", str(problem)) in captured.err
    assert "Traceback" not in captured.err


def test_check_rejects_a_non_scalar_loss_with_exit_2(problem, capsys, non_scalar_loss):
    code = main(
        ["check", "vector_loss:loss", "examples.tanh_softmax:grad"]
        + ["--params", str(problem / "params.npz")]
        + ["--data", str(problem / "data.npz"), "-q"]
    )

    assert code == 2
    assert "the loss must return a scalar, got shape (8, 4)" in capsys.readouterr().err


def test_check_requires_params(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["check", LOSS, "examples.tanh_softmax:grad"])

    assert exit_info.value.code == 2
    assert "--params" in capsys.readouterr().err


def test_check_at_a_kink_exits_0_and_says_not_differentiable(
    tmp_path, monkeypatch, capsys
):
    import numpy as np

    # A kink at w = 0: central differences see the mean slope 1.5, autodiff
    # the slope 2 of the branch it takes, so the references disagree; the
    # one-sided slopes are 2 (left) and 1 (right), and the analytic 2 is a
    # valid subgradient.
    (tmp_path / "kink.py").write_text(
        "import jax.numpy as jnp\nimport numpy as np\n\n"
        "def loss(params):\n"
        "    w = params['w']\n"
        "    return jnp.sum(jnp.where(w > 0, w, 2 * w))\n\n"
        "def grad(params):\n"
        "    return {'w': np.where(params['w'] > 0, 1.0, 2.0)}\n"
    )
    np.savez(tmp_path / "p.npz", w=np.array([0.0, 1.0]))
    monkeypatch.syspath_prepend(tmp_path)

    code = main(
        ["check", "kink:loss", "kink:grad", "--params", str(tmp_path / "p.npz")]
    )

    assert code == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(
        "not-differentiable: kink:loss has a kink at 1 entries of w (2,)"
    )
    assert "it is not counted as a failure" in captured.out
    assert "w[0]: analytic 2, kink: left 2, right 1" in captured.out


def test_report_refuses_an_out_path_that_is_a_file_before_running(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    code = main(["report", "--count", "50", "--out", str(blocker)])

    assert code == 2
    assert "cannot be used as the report folder" in capsys.readouterr().err


def test_report_refuses_to_check_nothing(tmp_path, capsys):
    code = main(["report", "--count", "0", "--no-digits", "--out", str(tmp_path)])

    assert code == 2
    assert "nothing to check" in capsys.readouterr().err
