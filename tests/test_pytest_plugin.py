# SPDX-License-Identifier: MIT
"""The pytest plugin: the gradcheck fixture, --gradcheck-report, Hypothesis.

Each test writes a small test suite with pytester and runs pytest on it in
this process; the suites check the examples in ``examples/``.
"""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

import pytest

from gradcheck.pytest_plugin import falsifying_examples

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parents[1]

SUITE_A = '''
"""Checks of the tanh-softmax example."""
from examples import tanh_softmax as ex


def test_right_gradient(gradcheck):
    params, x, labels = ex.example_problem()
    gradcheck.check_gradient(ex.loss, ex.grad, params, x, labels, batch_size=8)


def test_summed_gradient(gradcheck):
    params, x, labels = ex.example_problem()
    gradcheck.check_gradient(ex.loss, ex.grad_summed, params, x, labels, batch_size=8)
'''

SUITE_B = """
from examples import dense_backward as ex


def test_two_backward_passes(gradcheck):
    inputs = ex.example_inputs()
    right = gradcheck.compare_vjp(ex.forward, ex.backward, inputs, n_cotangents=1)
    wrong = gradcheck.compare_vjp(
        ex.forward, ex.backward_transposed, inputs, n_cotangents=1
    )
    assert str(right.verdict) == "pass"
    assert str(wrong.verdict) == "fail"
"""

SUITE_HYPOTHESIS = """
from hypothesis import Phase, given, settings, strategies as st

from examples import tanh_softmax as ex

FAST = settings(
    max_examples=3, database=None, deadline=None, phases=[Phase.generate, Phase.shrink]
)


@FAST
@given(seed=st.integers(0, 1000))
def test_right_gradient(gradcheck, seed):
    params, x, labels = ex.example_problem(seed=seed)
    gradcheck.check_gradient(ex.loss, ex.grad, params, x, labels, batch_size=8)


@FAST
@given(seed=st.integers(0, 1000))
def test_summed_gradient(gradcheck, seed):
    params, x, labels = ex.example_problem(seed=seed)
    gradcheck.check_gradient(ex.loss, ex.grad_summed, params, x, labels, batch_size=8)
"""


def _plugin_args() -> list[str]:
    """Enable the plugin by hand where pytest does not load it by itself.

    With the entry point installed, pytest loads the plugin itself, and
    ``-p`` would register the module a second time under another name.
    """
    installed = any(
        ep.value == "gradcheck.pytest_plugin"
        for ep in metadata.entry_points(group="pytest11")
    )
    if installed and not os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return []
    return ["-p", "gradcheck.pytest_plugin"]


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.syspathinsert(ROOT)
    return pytester


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*_plugin_args(), "-p", "no:cacheprovider", *args)


def test_report_counts_passing_and_failing_checks(suite):
    suite.makepyfile(test_a=SUITE_A, test_b=SUITE_B)

    result = _run(suite, "--gradcheck-report=out")

    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["gradcheck: 4 checks: 2 passed, 2 failed, 0 inconclusive; report: *"]
    )
    summary = json.loads((suite.path / "out" / "results.json").read_text())
    assert summary["title"] == "pytest session"
    assert summary["derivation"] == "checks from tests"
    assert summary["counts"] == {"checks": 4, "pass": 2, "fail": 2, "inconclusive": 0}
    assert [(c["section"], c["label"], c["verdict"]) for c in summary["checks"]] == [
        ("test_a.py", "test_a.py::test_right_gradient", "pass"),
        ("test_a.py", "test_a.py::test_summed_gradient", "fail"),
        ("test_b.py", "test_b.py::test_two_backward_passes #1", "pass"),
        ("test_b.py", "test_b.py::test_two_backward_passes #2", "fail"),
    ]
    html = (suite.path / "out" / "index.html").read_text()
    assert "<title>FAILED &middot; pytest session" in html
    assert "Checks made by 2 tests: Checks of the tanh-softmax example." in html


def test_check_failure_shows_the_readable_message(suite):
    suite.makepyfile(test_a=SUITE_A)

    result = _run(suite, "-k", "summed")

    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "E *GradientMismatchError: gradient is wrong on *",
            "E *first wrong quantity: W1",
            "E *likely cause: the gradient is 8 times the reference *batch size*",
        ]
    )


def test_report_shows_the_falsifying_example(suite):
    suite.makepyfile(test_h=SUITE_HYPOTHESIS)

    result = _run(suite, "--gradcheck-report=out")

    result.assert_outcomes(passed=1, failed=1)
    summary = json.loads((suite.path / "out" / "results.json").read_text())
    # Every example of the passing test; only the minimal failing example,
    # replayed last, of the failing one.
    assert [(c["label"], c["verdict"]) for c in summary["checks"]] == [
        ("test_h.py::test_right_gradient #1", "pass"),
        ("test_h.py::test_right_gradient #2", "pass"),
        ("test_h.py::test_right_gradient #3", "pass"),
        ("test_h.py::test_summed_gradient", "fail"),
    ]
    html = (suite.path / "out" / "index.html").read_text()
    assert "Falsifying example, as Hypothesis shrunk it" in html
    assert "test_summed_gradient(\n" in html
    assert "    gradcheck=&lt;gradcheck fixture&gt;,\n    seed=0," in html


def test_nothing_is_written_without_the_option(suite):
    suite.makepyfile(test_a=SUITE_A)

    result = _run(suite, "-k", "right")

    result.assert_outcomes(passed=1, deselected=1)
    assert not list(suite.path.rglob("*.json"))
    assert not list(suite.path.rglob("*.html"))
    assert "gradcheck:" not in result.stdout.str()


def test_option_without_checks_writes_nothing_and_says_so(suite):
    suite.makepyfile(test_plain="def test_plain():\n    assert True\n")

    result = _run(suite, "--gradcheck-report=out")

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["gradcheck: no checks were recorded, *"])
    assert not (suite.path / "out").exists()


def test_entry_point_registers_the_plugin():
    try:
        entry_points = metadata.entry_points(group="pytest11")
    except metadata.PackageNotFoundError:  # pragma: no cover - not installed
        pytest.skip("gradcheck is not installed")
    names = {ep.name: ep.value for ep in entry_points}
    if "gradcheck" not in names:
        pytest.skip("gradcheck is not installed with its entry points")

    assert names["gradcheck"] == "gradcheck.pytest_plugin"


# pytest's long traceback style puts "E" and seven spaces before each line of
# the exception, Hypothesis's notes included.
LONG_STYLE = """\
>       gradcheck.check_gradient(ex.loss, ex.grad_summed, params, x, labels)
E       gradcheck.errors.GradientMismatchError: gradient is wrong on W1 (5, 4)
E       first wrong quantity: W1
E       Failing test case: test_summed_gradient(
E           gradcheck=<gradcheck fixture>,
E           seed=0,  # or any other generated value
E       )
E       Explanation:
E           These lines were always and only run by failing test cases:
"""

NATIVE_STYLE = """\
AssertionError: gradient is wrong
Falsifying example: test_backprop(
    case=DeltaRuleCase(sizes=(1, 1)),
)
You can reproduce this test case by adding @reproduce_failure('6.1', b'AA')
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            LONG_STYLE,
            [
                "Failing test case: test_summed_gradient(\n"
                "    gradcheck=<gradcheck fixture>,\n"
                "    seed=0,  # or any other generated value\n"
                ")"
            ],
            id="long-style",
        ),
        pytest.param(
            NATIVE_STYLE,
            [
                "Falsifying example: test_backprop(\n"
                "    case=DeltaRuleCase(sizes=(1, 1)),\n"
                ")"
            ],
            id="native-style",
        ),
        pytest.param(
            "E   Falsifying example: test_one(n=1)\nE   other text\n",
            ["Falsifying example: test_one(n=1)"],
            id="one-line",
        ),
        pytest.param("E   AssertionError: 1 != 2\n", [], id="none"),
    ],
)
def test_falsifying_examples_are_read_from_failure_text(text, expected):
    assert falsifying_examples(text) == expected
