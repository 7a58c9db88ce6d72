# SPDX-License-Identifier: MIT
"""Sessions: tests, report, mutants, lint, bench."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_venv = "yes"

# The peers the bench session times gradcheck against. torch is pinned to
# its CPU build: an unpinned torch resolves to a CUDA build of several GB.
# Here the CPU wheel lies in pip's find-links; elsewhere, set
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu.
BENCH_PEERS = ["torch==2.13.0+cpu", "scipy"]

# Sessions run on the interpreter nox itself runs on, so a fresh machine
# needs no other Python.


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (slow property runs excluded; pass -m slow for them)."""
    session.install("-e", ".[test]")
    args = session.posargs or ["-m", "not slow"]
    session.run("pytest", *args, env={"GRADCHECK_PROFILE": "ci"})


@nox.session
def report(session: nox.Session) -> None:
    """Check the delta rule on generated networks and real data; write reports/."""
    session.install("-e", ".")
    session.run("python", "-m", "gradcheck", "report", *session.posargs)


@nox.session
def mutants(session: nox.Session) -> None:
    """Measure the checker on classic derivation mistakes; write reports/mutants.*."""
    session.install("-e", ".")
    session.run("python", "-m", "gradcheck", "mutants", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint and check formatting with ruff."""
    session.install("ruff")
    session.run("ruff", "check", "gradcheck", "tests", "benchmarks", "noxfile.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Time gradcheck beside torch, scipy and JAX checkers; write reports/bench.*."""
    session.install("-e", ".", *BENCH_PEERS)
    session.run("python", "benchmarks/peers.py", *session.posargs)


@nox.session
def calibrate(session: nox.Session) -> None:
    """Measure false alarm rates and detection thresholds; write reports/calibration."""
    session.install("-e", ".")
    session.run("python", "benchmarks/calibrate.py", *session.posargs)
