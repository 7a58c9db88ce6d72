# SPDX-License-Identifier: MIT
"""The pytest plugin: a ``gradcheck`` fixture and ``--gradcheck-report=DIR``.

Installing gradcheck registers this module with pytest through the
``pytest11`` entry point; from a checkout that is not installed, enable it
with ``-p gradcheck.pytest_plugin`` (not both: pytest refuses to register
the module twice). A test asks for the fixture and checks through it::

    def test_backprop(gradcheck):
        gradcheck.check_gradient(loss, grad, params, x, labels)

The fixture has the library's ``check_gradient``, ``check_vjp`` and
``check_delta_rule``, which raise :class:`~gradcheck.GradientMismatchError`
(an ``AssertionError``, so pytest shows the failure message) on a wrong
gradient, and ``compare_*`` twins that return the result without raising.
Each call records its :class:`~gradcheck.CheckResult` under the test's node
id (``tests/test_x.py::test_backprop``, with ``#2``, ``#3`` ... when a test
checks several times). A check counts as made whatever the test does with
it: a failing check inside ``pytest.raises`` is still a failing check.

With ``--gradcheck-report=DIR``, the session ends by writing the same
report a campaign writes (``index.html`` and ``results.json``), one section
per test module, into DIR (relative to where pytest was started), if any
check was recorded.

Hypothesis: a ``@given`` test checks once (or more) per example. When it
passes, every example's checks are kept. When it fails, only the checks of
the minimal failing example, which Hypothesis replays last, are kept, and
the falsifying example Hypothesis prints is attached to the failing check
as ``details["falsifying_example"]`` (the report shows it in the failure
card). The fixture is session-scoped, so Hypothesis's health check against
function-scoped fixtures does not fire.

The plugin costs nothing when unused: the fixture, and everything it
imports, is only set up when a test asks for it; without the option,
nothing is written or printed.

pytest-xdist is not supported by the report: each worker records its own
checks, and workers write nothing rather than overwrite each other.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # the fixture imports these lazily: they import JAX
    from gradcheck._result import CheckResult

__all__ = ["CheckRecorder", "falsifying_examples", "gradcheck"]

TITLE = "pytest session"
DERIVATION = "checks from tests"

# Lines Hypothesis prints before the falsifying example, across versions:
# "Falsifying example:" up to 6.1xx, "Failing test case:" since.
_EXAMPLE_PREFIXES = (
    "Falsifying example:",
    "Falsifying explicit example:",
    "Failing test case:",
)
_EXAMPLE_START = re.compile(
    r"^(?P<margin>E?[ \t]*)(?:"
    + "|".join(re.escape(p) for p in _EXAMPLE_PREFIXES)
    + ")"
)
_REPRODUCE_FAILURE = re.compile(r"@reproduce_failure\([^)]*\)")


@dataclass
class _Record:
    """One check, with the Hypothesis example it was made in, if any."""

    result: CheckResult
    example: int | None
    is_final: bool


@dataclass
class _Store:
    """Everything the plugin remembers over a session."""

    records: dict[str, list[_Record]] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    falsifying: dict[str, list[str]] = field(default_factory=dict)
    reproduce: dict[str, str] = field(default_factory=dict)
    modules: dict[str, str] = field(default_factory=dict)
    examples: int = 0
    last_context: object = None


_STORE = pytest.StashKey[_Store]()
_STARTED = pytest.StashKey[tuple[str, float]]()
_OUTCOME = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck")
    group.addoption(
        "--gradcheck-report",
        metavar="DIR",
        default=None,
        help="write a gradcheck report (index.html and results.json) of the "
        "checks made through the gradcheck fixture into DIR",
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    if session.config.getoption("gradcheck_report") is not None:
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        session.config.stash[_STARTED] = (started, time.perf_counter())


# ---------------------------------------------------------------------------
# The fixture


def _current_nodeid() -> str:
    # pytest sets this for every phase of every test, setup and teardown
    # included, so a session-scoped fixture still knows whose check it is.
    value = os.environ.get("PYTEST_CURRENT_TEST", "")
    return value.rsplit(" (", 1)[0] if value else "<session>"


def _hypothesis_context() -> tuple[object | None, bool]:
    """Return the current Hypothesis example's context and whether it is final."""
    if "hypothesis" not in sys.modules:
        return None, False
    try:
        from hypothesis.control import current_build_context, currently_in_test_context
    except ImportError:  # pragma: no cover - Hypothesis moved its internals
        return None, False
    if not currently_in_test_context():
        return None, False
    context = current_build_context()
    return context, bool(getattr(context, "is_final", False))


class CheckRecorder:
    """What the ``gradcheck`` fixture gives a test: checks that are recorded.

    The methods take the same arguments as the library functions of the
    same names and return their :class:`~gradcheck.CheckResult`.
    ``check_*`` raise :class:`~gradcheck.GradientMismatchError` when the
    verdict is ``fail``; ``compare_*`` never do. An inconclusive check does
    not raise: the references disagreed, which says nothing about the
    gradient.
    """

    def __init__(self, store: _Store) -> None:
        self._store = store

    def __repr__(self) -> str:
        # Hypothesis prints fixture arguments in its falsifying examples.
        return "<gradcheck fixture>"

    def _record(self, result: CheckResult) -> CheckResult:
        context, is_final = _hypothesis_context()
        example = None
        if context is not None:
            # One number per Hypothesis example, told apart by its context.
            if context is not self._store.last_context:
                self._store.examples += 1
                self._store.last_context = context
            example = self._store.examples
        record = _Record(result, example, is_final)
        self._store.records.setdefault(_current_nodeid(), []).append(record)
        return result

    def _raise_if_failed(self, result: CheckResult) -> CheckResult:
        __tracebackhide__ = True
        from gradcheck._result import raise_on_failure

        return raise_on_failure(result)

    def compare_gradient(self, *args: Any, **kwargs: Any) -> CheckResult:
        """Record :func:`gradcheck.compare_gradient`."""
        from gradcheck._gradient import compare_gradient

        return self._record(compare_gradient(*args, **kwargs))

    def check_gradient(self, *args: Any, **kwargs: Any) -> CheckResult:
        """Record :func:`gradcheck.check_gradient`: raise if the gradient is wrong."""
        __tracebackhide__ = True
        return self._raise_if_failed(self.compare_gradient(*args, **kwargs))

    def compare_vjp(self, *args: Any, **kwargs: Any) -> CheckResult:
        """Record :func:`gradcheck.compare_vjp`."""
        from gradcheck._gradient import compare_vjp

        return self._record(compare_vjp(*args, **kwargs))

    def check_vjp(self, *args: Any, **kwargs: Any) -> CheckResult:
        """Record :func:`gradcheck.check_vjp`: raise if the backward pass is wrong."""
        __tracebackhide__ = True
        return self._raise_if_failed(self.compare_vjp(*args, **kwargs))

    def compare_delta_rule(self, *args: Any, **kwargs: Any) -> CheckResult:
        """Record :func:`gradcheck.compare_delta_rule`."""
        from gradcheck._check import compare_delta_rule

        return self._record(compare_delta_rule(*args, **kwargs))

    def check_delta_rule(self, *args: Any, **kwargs: Any) -> CheckResult:
        """Record :func:`gradcheck.check_delta_rule`: raise if it is wrong."""
        __tracebackhide__ = True
        return self._raise_if_failed(self.compare_delta_rule(*args, **kwargs))


@pytest.fixture(scope="session")
def gradcheck(request: pytest.FixtureRequest) -> CheckRecorder:
    """Check gradients and record each result for ``--gradcheck-report``.

    Session-scoped, so that it also works in Hypothesis tests; every check
    is still recorded under the test that made it.
    """
    store = request.config.stash.setdefault(_STORE, _Store())
    return CheckRecorder(store)


# ---------------------------------------------------------------------------
# Falsifying examples


def falsifying_examples(text: str) -> list[str]:
    """Return the falsifying examples Hypothesis printed in a failure's text.

    Each example is returned whole, as Hypothesis printed it: the line that
    opens it (``Falsifying example: test(`` or, in newer Hypothesis,
    ``Failing test case: test(``), the arguments, and the closing
    parenthesis. pytest's ``E`` marker and indentation are removed.
    """
    lines = text.splitlines()
    examples: list[str] = []
    i = 0
    while i < len(lines):
        opening = _EXAMPLE_START.match(lines[i])
        if opening is None:
            i += 1
            continue
        # pytest writes "E" and spaces before each line of the exception;
        # removing exactly as many characters keeps the example's indents.
        margin = len(opening.group("margin"))
        block = [lines[i][margin:].rstrip()]
        if block[0].endswith("("):
            # A call split over lines ends at its unindented ")".
            while i + 1 < len(lines):
                i += 1
                line = lines[i][margin:].rstrip()
                block.append(line)
                if line.startswith(")"):
                    break
        example = "\n".join(block)
        if example not in examples:
            examples.append(example)
        i += 1
    return examples


def _module_description(item: pytest.Item) -> str:
    module = getattr(item, "module", None)
    doc = (getattr(module, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> pytest.TestReport:
    report = yield
    store = item.config.stash.get(_STORE, None)
    if store is None or item.nodeid not in store.records:
        return report

    store.modules.setdefault(item.nodeid.split("::")[0], _module_description(item))
    if report.when == "call" and report.failed:
        store.failed.add(item.nodeid)
        text = report.longreprtext
        examples = falsifying_examples(text)
        if not examples:
            # A short traceback style (--tb=line) leaves the example out of
            # the text; Hypothesis also keeps it on the item.
            found = getattr(item, "_hypothesis_failing_examples", None) or []
            examples = [f"{_EXAMPLE_PREFIXES[0]} {e}" for e in found]
        store.falsifying[item.nodeid] = examples
        decorator = _REPRODUCE_FAILURE.search(text)
        if decorator:
            store.reproduce[item.nodeid] = decorator.group(0)
    return report


# ---------------------------------------------------------------------------
# The report


def _kept(store: _Store, nodeid: str) -> list[_Record]:
    """Return a test's records, only the final example's for failed Hypothesis tests."""
    records = store.records[nodeid]
    if nodeid in store.failed and any(r.example is not None for r in records):
        finals = [r for r in records if r.is_final]
        if finals:
            return finals
    return records


def _finished_checks(store: _Store, nodeid: str) -> list[CheckResult]:
    """Label a test's kept checks and attach its falsifying examples."""
    from gradcheck._compare import Verdict

    results = [r.result for r in _kept(store, nodeid)]
    examples = store.falsifying.get(nodeid, [])
    failing = [i for i, r in enumerate(results) if r.verdict is Verdict.FAIL]
    if len(examples) == len(failing):
        attached = dict(zip(failing, examples, strict=True))
    else:
        attached = dict.fromkeys(failing, "\n\n".join(examples))

    finished = []
    for i, result in enumerate(results):
        label = nodeid if len(results) == 1 else f"{nodeid} #{i + 1}"
        if result.label:
            label += f": {result.label}"
        changes: dict[str, Any] = {"label": label}
        if attached.get(i):
            changes["details"] = {
                **result.details,
                "falsifying_example": attached[i],
            }
            if not result.reproduce and nodeid in store.reproduce:
                changes["reproduce"] = store.reproduce[nodeid]
        finished.append(dataclasses.replace(result, **changes))
    return finished


def _summary(store: _Store, config: pytest.Config, interrupted: bool) -> dict:
    from gradcheck._campaign import summarise_checks

    by_module: dict[str, list[CheckResult]] = {}
    tests: dict[str, int] = {}
    for nodeid in store.records:
        module = nodeid.split("::")[0]
        by_module.setdefault(module, []).extend(_finished_checks(store, nodeid))
        tests[module] = tests.get(module, 0) + 1

    sections = []
    for module, checks in by_module.items():
        n = tests[module]
        description = f"Checks made by {n} test{'' if n == 1 else 's'}"
        doc = store.modules.get(module, "")
        description += f": {doc}" if doc else "."
        sections.append((module, description, checks))

    started, start = config.stash.get(_STARTED, ("", time.perf_counter()))
    return summarise_checks(
        TITLE,
        DERIVATION,
        sections,
        interrupted=interrupted,
        started=started,
        duration_s=round(time.perf_counter() - start, 2),
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    directory = config.getoption("gradcheck_report")
    store = config.stash.get(_STORE, None)
    if directory is None or store is None or not store.records:
        return
    if hasattr(config, "workerinput"):  # a pytest-xdist worker
        return

    from gradcheck._report import write_report

    summary = _summary(
        store, config, interrupted=exitstatus == pytest.ExitCode.INTERRUPTED
    )
    target = Path(config.invocation_params.dir, directory)
    try:
        html, _ = write_report(summary, target)
    except OSError as err:
        config.stash[_OUTCOME] = f"could not write the report to {target}: {err}"
        return
    counts = summary["counts"]
    checks = f"{counts['checks']} check{'' if counts['checks'] == 1 else 's'}"
    config.stash[_OUTCOME] = (
        f"{checks}: {counts['pass']} passed, {counts['fail']} failed, "
        f"{counts['inconclusive']} inconclusive; report: {html}"
    )


def pytest_terminal_summary(
    terminalreporter: Any, exitstatus: int, config: pytest.Config
) -> None:
    if config.getoption("gradcheck_report") is None:
        return
    if hasattr(config, "workerinput"):
        return
    outcome = config.stash.get(_OUTCOME, None)
    if outcome is None:
        outcome = "no checks were recorded, so no report was written"
        if getattr(config.option, "numprocesses", None):
            outcome += " (checks made in pytest-xdist workers are not collected)"
    terminalreporter.write_line(f"gradcheck: {outcome}")
