# SPDX-License-Identifier: MIT
"""Measure what the complex step, the Taylor test and the step sweeps cost.

Checks the same generated delta-rule cases (seeded, at most
``--max-params`` parameters, as the fuzzing path draws them) and the same
small general gradient several times, with each piece of evidence
switched on and off, and prints the processor time per check. The cases
are drawn and the references compiled before the clock starts.

Usage::

    python benchmarks/evidence_cost.py --count 200

Timings depend on the machine and on what else runs on it; processor
time is less sensitive to other load than wall time, not immune to it.
"""

from __future__ import annotations

import argparse
import os
import time


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200, help="delta-rule cases")
    parser.add_argument("--max-params", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many")
    return parser.parse_args(argv)


SETTINGS = {
    "everything (defaults)": {},
    "no complex step": {"complex_step": False},
    "no Taylor test": {"taylor": False},
    "no step sweeps": {"sweeps": False},
    "none of the three": {"complex_step": False, "taylor": False, "sweeps": False},
}


def _cases(count: int, max_params: int) -> list[tuple]:
    from hypothesis import HealthCheck, given, seed, settings

    from gradcheck import strategies as gst

    cases: list[tuple] = []

    @seed(0)
    @settings(
        max_examples=20 * count,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(gst.seeded_delta_rule_cases())
    def draw(case):
        if len(cases) < count and case.network.n_params <= max_params:
            cases.append(case.args)

    draw()
    return cases


def main(argv: list[str] | None = None) -> None:
    """Print processor time per check for each setting."""
    args = _parse(argv)
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    import jax

    jax.config.update("jax_enable_x64", True)
    import gradcheck
    from examples import tanh_softmax as ex

    cases = _cases(args.count, args.max_params)
    params, x, labels = ex.example_problem()
    for options in SETTINGS.values():  # compile everything first
        gradcheck.compare_delta_rule(*cases[0], **options)
        gradcheck.compare_gradient(ex.loss, ex.grad, params, x, labels, **options)

    print(f"{len(cases)} delta-rule cases of at most {args.max_params} parameters")
    print(f"{'setting':<24} {'delta rule ms':>14} {'tanh/softmax ms':>16}")
    for name, options in SETTINGS.items():
        delta, general = [], []
        for _ in range(args.repeat):
            start = time.process_time()
            for case in cases:
                gradcheck.compare_delta_rule(*case, **options)
            delta.append((time.process_time() - start) / len(cases))
            start = time.process_time()
            for _ in range(20):
                gradcheck.compare_gradient(
                    ex.loss, ex.grad, params, x, labels, **options
                )
            general.append((time.process_time() - start) / 20)
        print(f"{name:<24} {1e3 * min(delta):>14.2f} {1e3 * min(general):>16.2f}")


if __name__ == "__main__":
    main()
