# SPDX-License-Identifier: MIT
"""The side-by-side benchmark's harness: selection, repeats, ratios, report.

Nothing here times anything or needs torch or scipy; the one test that
runs the torch checker skips cleanly without torch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import peers
from gradcheck._bench_report import (
    add_ratios,
    format_ratio,
    format_seconds,
    format_table,
    render_bench_html,
    write_bench_report,
)
from gradcheck.errors import InvalidArgumentError, InvalidTypeError


def _row(checker: str, median: float | None, **extra: object) -> dict:
    return {
        "checker": checker,
        "checks": "every entry",
        "description": f"{checker}(...)",
        "first_s": median,
        "median_s": median,
        "repeats": 3 if median is not None else 0,
        "right_passes": None if median is None else True,
        "planted_flagged": None if median is None else True,
        "note": "" if median is not None else "not run: absent",
        **extra,
    }


def _summary(rows: list[dict]) -> dict:
    return {
        "title": "bench <test>",
        "started": "2026-12-04T05:00:00+00:00",
        "duration_s": 12.5,
        "settings": {
            "batch": 8,
            "seed": 0,
            "budget_s": 5.0,
            "max_repeats": 3,
            "repeats": None,
            "rounds": 20,
            "interleave_below_s": 0.1,
            "plant_fraction": 0.01,
            "planted": True,
            "scipy_rtol": 1e-4,
            "fd_rtol": 1e-5,
            "fd_atol": 1e-7,
            "argv": ["--quick"],
        },
        "environment": {
            "platform": "test",
            "cpus": 2,
            "load_average": [1.0, 1.0, 1.0],
            "versions": {"python": "3.11"},
        },
        "sizes": [{"name": "small", "sizes": [2, 3, 1], "n_params": 13, "rows": rows}],
        "throughput": [
            {
                "workers": 2,
                "checked": 100,
                "per_s": 240.5,
                "cpu_ms": 8.1,
                "checking_ms": 5.0,
                "compile_s": 4.0,
                "failed": 0,
                "inconclusive": 0,
                "max_params": 100,
            }
        ],
        "scale": {"sizes": [512, 1024, 512, 10], "note": "not run: no screen"},
        "disagreements": [],
        "maxrss_mb": 512.0,
    }


@pytest.fixture(scope="module")
def problem():
    return peers.make_problem("tiny", (3, 4, 2))


class TestSelection:
    def test_all_checkers_by_default_in_table_order(self):
        assert peers.select_checkers(None) == list(peers.CHECKERS)
        assert peers.select_checkers("all") == list(peers.CHECKERS)

    def test_selection_keeps_the_units_of_the_ratios(self):
        chosen = peers.select_checkers("torch-fast, scipy")

        assert chosen == ["forward", "gradcheck", "torch-fast", "scipy"]

    def test_unknown_checker_is_named(self):
        with pytest.raises(ValueError, match=r"unknown checkers \['tensorflow'\]"):
            peers.select_checkers("scipy,tensorflow")

    def test_sizes(self):
        assert peers.select_sizes(None) == ["small", "large"]
        assert peers.select_sizes("large,small") == ["small", "large"]
        assert peers.select_sizes("none") == []
        with pytest.raises(ValueError, match="unknown sizes"):
            peers.select_sizes("huge")

    def test_quick_selects_the_small_size_and_few_repeats(self):
        args = peers._parse(["--quick"])

        assert (args.sizes, args.budget, args.max_repeats) == ("small", 5.0, 3)
        assert args.throughput == 100 and args.planted_limit == 30.0

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["--seed", "-1"], "argument --seed: expected 0 or more, got -1"),
            (["--seed", "x"], "argument --seed: expected an integer, got 'x'"),
            (["--throughput", "-3"], "argument --throughput: expected 0 or more"),
            (["--repeats", "0"], "argument --repeats: expected 1 or more, got 0"),
            # A negative count names the same bound as zero does.
            (["--repeats", "-2"], "argument --repeats: expected 1 or more, got -2"),
            (["--rounds", "-1"], "argument --rounds: expected 0 or more, got -1"),
            (["--max-repeats", "0"], "argument --max-repeats: expected 1 or more"),
            (["--budget", "0"], "argument --budget: expected a positive number"),
            (["--budget", "nan"], "argument --budget: expected a positive number"),
            (["--planted-limit", "inf"], "argument --planted-limit: expected a pos"),
        ],
        ids=lambda v: " ".join(v) if isinstance(v, list) else "",
    )
    def test_parse_names_a_bad_value(self, argv, message, capsys):
        with pytest.raises(SystemExit) as exit_:
            peers._parse(argv)

        assert exit_.value.code == 2
        assert message in capsys.readouterr().err

    @pytest.mark.parametrize(
        ("p", "text"),
        [
            (1.284418e-08, "1.3e-08"),
            (5.3150731e-09, "5.4e-09"),
            (1.2e-05, "1.2e-05"),
            (7.810525e-34, "7.9e-34"),
            (0.0, "0"),
        ],
    )
    def test_at_most_never_rounds_a_probability_down(self, p, text):
        written = peers._at_most(p)

        assert written == text
        assert float(written) >= p

    def test_versions_name_the_installed_gradcheck(self):
        import importlib.metadata

        versions = peers._versions()

        assert versions["gradcheck"] == importlib.metadata.version("gradcheck")

    def test_scale_lines_say_the_planted_run_was_skipped(self):
        scale = {
            "sizes": [4, 3, 2],
            "n_params": 23,
            "directions": peers.DEFAULT_SCREEN,
            "right_s": 0.5,
            "right_verdict": "pass",
            "planted_s": None,
            "planted_verdict": "not run",
            "planted_first_wrong": None,
            "maxrss_mb": 300.0,
        }

        lines = peers._scale_lines(scale)

        assert lines[0].endswith(f"screening with {peers.DEFAULT_SCREEN}")
        assert lines[2] == "  planted error: not run"

    def test_sizes_have_the_stated_parameter_counts(self):
        counts = {
            name: peers.make_problem(name, sizes).n_params
            for name, sizes in peers.SIZES.items()
        }

        assert counts == {"small": 26_122, "large": 101_386}


class TestRepeats:
    @pytest.mark.parametrize(
        ("first", "compiles", "expected"),
        [
            (0.001, False, 7),  # cheap: as many as allowed
            (4.0, False, 7),
            (12.0, True, 2),  # fits twice in the budget
            (40.0, True, 1),  # compiles: the first call cannot count
            (40.0, False, 0),  # nothing to compile: the first call counts
            (0.0, False, 7),
        ],
        ids=["cheap", "fits-seven", "fits-two", "slow-compiling", "slow", "zero"],
    )
    def test_repeats_follow_the_budget(self, first, compiles, expected):
        assert peers.choose_repeats(first, 30.0, 7, compiles) == expected

    def test_time_checker_records_a_skipped_checker_without_numbers(self):
        checker = peers.Checker(
            "absent", "absent()", "-", lambda p, planted: True, needs="no_such_mod"
        )
        problem = peers.make_problem("tiny", (2, 3, 1))

        row = peers.time_checker(checker, problem, 1.0, 3)

        assert row["median_s"] is None and row["right_passes"] is None
        assert "no_such_mod is not installed" in row["note"]

    def test_time_checker_skips_the_planted_error_of_a_slow_checker(self):
        calls = []
        checker = peers.Checker(
            "stub", "stub()", "-", lambda p, planted: calls.append(planted) or True
        )
        problem = peers.make_problem("tiny", (2, 3, 1))

        row = peers.time_checker(checker, problem, 1.0, 3, 1, planted_limit_s=-1.0)

        assert calls == [False, False]
        assert row["planted_flagged"] is None
        assert "planted error not run (first call over -1 s)" in row["note"]

    def test_time_checker_repeats_and_runs_the_planted_error(self):
        calls = []
        checker = peers.Checker(
            "stub", "stub()", "-", lambda p, planted: calls.append(planted) or True
        )
        problem = peers.make_problem("tiny", (2, 3, 1))

        row = peers.time_checker(checker, problem, 1.0, 3, repeats=2)

        assert calls == [False, False, False, True]
        assert row["repeats"] == 2 and len(row["samples_s"]) == 2
        assert row["right_passes"] is True and row["planted_flagged"] is False

    def test_interleave_rotates_the_fast_checkers_and_leaves_slow_ones(
        self, monkeypatch
    ):
        calls = []

        def stub(name):
            return peers.Checker(
                name, f"{name}()", "-", lambda p, planted: calls.append(name) or True
            )

        checkers = {name: stub(name) for name in ("a", "b", "c", "slow")}
        monkeypatch.setattr(peers, "CHECKERS", checkers)
        problem = peers.make_problem("tiny", (2, 3, 1))

        def row(name, median):
            return {
                "checker": name,
                "median_s": median,
                "repeats": 3,
                "samples_s": [median],
                "right_passes": True,
                "note": "",
            }

        rows = [row("a", 1e-3), row("b", 2e-3), row("c", 3e-3), row("slow", 5.0)]
        out = peers.interleave(rows, problem, rounds=3)

        # Each round calls every fast checker once, starting one further on.
        assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
        assert out[3] == rows[3]
        for fast in out[:3]:
            assert fast["repeats"] == 3 and len(fast["samples_s"]) == 3
            assert fast["median_s"] == sorted(fast["samples_s"])[1]
            assert fast["note"].startswith("side by side; alone ")
            assert fast["alone_s"] == rows[out.index(fast)]["median_s"]
        assert peers.interleave(rows, problem, rounds=0) == rows


class TestCheckersDoRealWork:
    """Each peer, on a tiny network: the right gradient passes, a planted error
    is flagged (where the checker looks at every entry)."""

    def test_numpy_loss_and_grad_match_gradcheck(self, problem):
        import jax

        from gradcheck import squared_error

        z = problem.flat()
        with jax.enable_x64(True):
            expected = float(
                squared_error(problem.network, problem.params, problem.x, problem.d)
            )
            grad = jax.grad(
                lambda p: squared_error(problem.network, p, problem.x, problem.d)
            )(problem.params)
        flat = np.concatenate([np.ravel(grad[n]) for n in problem.shapes])

        assert peers.numpy_loss(problem, z) == pytest.approx(expected, rel=1e-12)
        np.testing.assert_allclose(peers.numpy_grad(problem, z), flat, rtol=1e-10)

    @pytest.mark.parametrize("name", ["scipy", "jax-fd", "jax-check-grads"])
    def test_peer_passes_right_and_flags_planted(self, problem, name):
        if name == "scipy":
            pytest.importorskip("scipy")
        with pytest.MonkeyPatch.context() as mp:
            # A tiny network's gradient has few entries, so the planted
            # error is made plain for the one-direction check.
            mp.setattr(peers, "PLANT_FRACTION", 0.5)
            checker = peers.CHECKERS[name]
            problem.cache.clear()
            assert checker.run(problem, False) is True
            assert checker.run(problem, True) is False

    @pytest.mark.parametrize("fast", [False, True], ids=["full", "fast"])
    def test_torch_passes_right_and_flags_planted(self, problem, fast):
        pytest.importorskip("torch")
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(peers, "PLANT_FRACTION", 0.5)
            problem.cache.clear()
            assert peers._run_torch(problem, False, fast=fast) is True
            assert peers._run_torch(problem, True, fast=fast) is False

    def test_gradcheck_passes_right_and_flags_planted(self, problem):
        assert peers._run_gradcheck(problem, False) is True
        assert peers._run_gradcheck(problem, True) is False

    @pytest.mark.parametrize("directions", [None, 1, 4])
    def test_screen_miss_is_the_largest_recorded_at_one_percent(
        self, problem, directions
    ):
        from gradcheck import compare_delta_rule, delta_rule

        miss = peers.screen_miss(problem, directions)

        result = compare_delta_rule(
            *(problem.network, problem.params, problem.x, problem.d, peers.ETA),
            derivation=delta_rule,
            method="screen",
            directions=directions,
        )
        recorded = [
            facts["miss_probability"]["0.01"]
            for facts in result.details["screen"]["quantities"].values()
        ]
        assert miss == max(recorded)
        # float64 bands are far below 1%: one direction all but settles it.
        assert 0 < miss < 1e-4


class TestFormatting:
    @pytest.mark.parametrize(
        ("value", "text"),
        [
            (5.12e-4, "512 \u00b5s"),
            (3.271e-3, "3.27 ms"),
            (0.5, "500 ms"),
            (41.23, "41.2 s"),
            (125.0, "2 min 05 s"),
            (None, "\u2013"),
            (float("nan"), "\u2013"),
        ],
    )
    def test_format_seconds(self, value, text):
        assert format_seconds(value) == text

    @pytest.mark.parametrize(
        ("value", "text"),
        [
            (0.01234, "0.0123\u00d7"),
            (2.5, "2.5\u00d7"),
            (1250.4, "1,250\u00d7"),
            (None, "\u2013"),
        ],
    )
    def test_format_ratio(self, value, text):
        assert format_ratio(value) == text

    def test_ratios_divide_gradcheck_by_each_row(self):
        rows = add_ratios(
            [
                _row("forward", 0.001),
                _row("gradcheck", 2.0),
                _row("gradcheck-screen", 0.1),
                _row("torch", 8.0),
                _row("scipy", None),
            ]
        )
        by_name = {r["checker"]: r for r in rows}

        assert by_name["torch"]["full_over"] == pytest.approx(0.25)
        assert by_name["torch"]["screen_over"] == pytest.approx(0.0125)
        assert by_name["torch"]["forward_passes"] == pytest.approx(8000)
        assert by_name["gradcheck"]["full_over"] == 1.0
        assert by_name["scipy"]["full_over"] is None
        assert by_name["scipy"]["forward_passes"] is None

    def test_ratios_without_screening_are_none(self):
        rows = add_ratios([_row("gradcheck", 2.0), _row("gradcheck-screen", None)])

        assert all(r["screen_over"] is None for r in rows)

    def test_table_aligns_columns_and_keeps_notes(self):
        rows = add_ratios(
            [_row("forward", 1e-4), _row("gradcheck", 2.0), _row("torch", None)]
        )

        lines = format_table(rows).splitlines()

        assert lines[0].startswith("checker ")
        assert set(lines[1].replace(" ", "")) == {"-"}
        assert lines[2].split()[:2] == ["forward", "every"]
        starts = {line.index("\u2013") for line in lines[4:5]}
        assert starts  # the skipped row shows dashes, not numbers
        assert lines[4].endswith("not run: absent")
        header_at = lines[0].index("median (n)")
        assert lines[3][header_at:].startswith("2 s (3)")


class TestReport:
    def test_writes_html_and_strict_json(self, tmp_path):
        rows = add_ratios([_row("forward", 1e-4), _row("gradcheck", 2.0)])
        rows[1]["median_s"] = 2.0
        summary = _summary(rows)
        summary["maxrss_mb"] = float("nan")

        html_path, json_path = write_bench_report(summary, tmp_path / "reports")

        assert html_path.name == "bench.html" and json_path.name == "bench.json"
        data = json.loads(json_path.read_text())
        assert data["maxrss_mb"] == "nan"
        assert data["sizes"][0]["rows"][1]["full_over"] == 1.0
        assert not list((tmp_path / "reports").glob(".*.tmp"))
        page = html_path.read_text()
        assert "<b>20</b> rounds side by side" in page
        # A summary from before side-by-side timing still renders, without it.
        del summary["settings"]["rounds"]
        html_path, _ = write_bench_report(summary, tmp_path / "older")
        assert "side by side" not in html_path.read_text()

    def test_page_is_self_contained_and_escaped(self):
        rows = add_ratios(
            [_row("forward", 1e-4), _row("gradcheck", 2.0), _row("torch", None)]
        )

        html = render_bench_html(_summary(rows))

        assert "bench &lt;test&gt;" in html
        assert "<script" not in html and "http" not in html
        assert "not run: absent" in html
        assert "240.5" in html  # the throughput row
        assert "not run: no screen" in html
        assert 'href="index.html"' in html

    @pytest.mark.parametrize(
        ("summary", "error"),
        [([], InvalidTypeError), ({"title": "x"}, InvalidArgumentError)],
        ids=["not-a-dict", "missing-keys"],
    )
    def test_rejects_bad_summaries(self, summary, error):
        with pytest.raises(error):
            render_bench_html(summary)
