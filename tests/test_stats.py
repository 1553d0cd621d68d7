"""Aggregation over seeds: summaries, Welch comparisons, rankings and a report's verdicts."""

from __future__ import annotations

import math
import warnings

import pytest

from gen.stats import Comparison, Summary, rank, summarise, verdict, welch

T_975_DF2 = 4.302653  # Student's t, 97.5% quantile, 2 degrees of freedom
T_975_DF1 = 12.706205


# ------------------------------------------------------------------------------ summarise
def test_summary_of_three_seeds_matches_hand_computation():
    s = summarise([1.0, 2.0, 3.0])
    assert s is not None and s.n == 3
    assert s.mean == pytest.approx(2.0)
    assert s.std == pytest.approx(1.0)
    half = T_975_DF2 * 1.0 / math.sqrt(3)
    assert s.low == pytest.approx(2.0 - half, rel=1e-6)
    assert s.high == pytest.approx(2.0 + half, rel=1e-6)


def test_one_seed_has_a_mean_but_no_spread_or_interval():
    assert summarise([0.7]) == Summary(n=1, mean=0.7, std=None, low=None, high=None)


def test_missing_and_failed_runs_are_dropped():
    s = summarise([1.0, None, float("nan"), 3.0])
    assert s is not None and s.n == 2
    assert s.mean == pytest.approx(2.0)
    assert s.std == pytest.approx(math.sqrt(2.0))
    assert s.high - s.mean == pytest.approx(T_975_DF1 * math.sqrt(2.0) / math.sqrt(2.0), rel=1e-6)


def test_nothing_left_gives_none():
    assert summarise([]) is None
    assert summarise([None, float("nan")]) is None


def test_identical_seeds_have_zero_spread_and_a_point_interval():
    assert summarise([0.1, 0.1, 0.1]) == Summary(n=3, mean=0.1, std=0.0, low=0.1, high=0.1)


# ---------------------------------------------------------------------------------- welch
SEPARATED_A, SEPARATED_B = [10.0, 10.1, 9.9], [20.0, 20.2, 19.8]
OVERLAPPING_A, OVERLAPPING_B = [10.0, 12.0, 14.0], [11.0, 13.0, 15.0]


def test_clearly_separated_seeds_are_distinguishable():
    c = welch("gan", SEPARATED_A, "vae", SEPARATED_B)
    assert c.test == "Welch t-test"
    assert c.distinguishable and c.p is not None and c.p < 0.05
    assert c.diff == pytest.approx(-10.0)
    assert (c.a, c.b) == ("gan", "vae")


def test_overlapping_seeds_are_not_distinguishable():
    c = welch("gan", OVERLAPPING_A, "vae", OVERLAPPING_B)
    assert c.test == "Welch t-test"
    assert not c.distinguishable
    assert c.p == pytest.approx(0.5734, abs=1e-3)
    assert c.diff == pytest.approx(-1.0)


def test_alpha_sets_the_threshold():
    c = welch("gan", OVERLAPPING_A, "vae", OVERLAPPING_B, alpha=0.6)
    assert c.distinguishable


def test_constant_seeds_with_different_means_are_distinguishable():
    c = welch("gan", [1.0, 1.0, 1.0], "vae", [2.0, 2.0])
    assert c == Comparison("gan", "vae", -1.0, 0.0, True, "identical across seeds")


def test_constant_seeds_with_equal_means_are_not_distinguishable():
    c = welch("gan", [3.0, 3.0], "vae", [3.0, 3.0, 3.0])
    assert c == Comparison("gan", "vae", 0.0, 1.0, False, "identical across seeds")


def test_one_constant_side_still_gets_a_welch_test_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = welch("gan", [1.0, 1.0, 1.0], "vae", [5.0, 5.1, 4.9])
    assert c.test == "Welch t-test" and c.distinguishable


def test_too_few_seeds_gives_no_p_value():
    c = welch("gan", [1.0], "vae", [1.0, 2.0, 3.0])
    assert c.p is None and not c.distinguishable
    assert c.test == "too few seeds (n=1 vs 3)"
    assert c.diff == pytest.approx(-1.0)


def test_too_few_seeds_counts_only_usable_values():
    c = welch("gan", [1.0, None, float("nan")], "vae", [2.0, 3.0])
    assert c.test == "too few seeds (n=1 vs 2)"


# -------------------------------------------------------------------------------- verdict
def test_verdict_names_the_better_model_by_direction():
    c = welch("gan", SEPARATED_A, "vae", SEPARATED_B)
    assert verdict(c, lower_is_better=True) == (
        "gan is better than vae (Welch t-test over seeds, p < 0.001)"
    )
    assert verdict(c, lower_is_better=False) == (
        "vae is better than gan (Welch t-test over seeds, p < 0.001)"
    )


def test_verdict_wording_with_p_values():
    better = Comparison("gan", "vae", -1.0, 0.003, True, "Welch t-test")
    assert verdict(better, True) == "gan is better than vae (Welch t-test over seeds, p = 0.003)"
    same = Comparison("gan", "vae", -1.0, 0.41, False, "Welch t-test")
    assert verdict(same, True) == (
        "gan and vae are not distinguishable (Welch t-test over seeds, p = 0.41)"
    )


def test_verdict_for_overlapping_seeds():
    c = welch("gan", OVERLAPPING_A, "vae", OVERLAPPING_B)
    assert verdict(c, True) == (
        "gan and vae are not distinguishable (Welch t-test over seeds, p = 0.57)"
    )


def test_verdict_for_identical_seeds():
    c = welch("gan", [2.0, 2.0], "vae", [1.0, 1.0])
    assert verdict(c, True) == "vae is better than gan (identical across seeds, p = 0)"
    same = welch("gan", [1.0, 1.0], "vae", [1.0, 1.0])
    assert verdict(same, True) == (
        "gan and vae are not distinguishable (identical across seeds, p = 1)"
    )


def test_verdict_for_too_few_seeds():
    c = welch("gan", [1.0], "vae", [1.0, 2.0, 3.0])
    assert verdict(c, True) == "gan and vae cannot be told apart: too few seeds (n=1 vs 3)"


# ----------------------------------------------------------------------------------- rank
GROUPS = {
    "b": [5.0, 5.1, 4.9],
    "a": [1.0, 1.1, 0.9],
    "c": [3.0, 3.2, 2.8],
}


def test_rank_lower_is_better_orders_best_first_and_pairs_with_the_next():
    ranked = rank(GROUPS, lower_is_better=True)
    assert [name for name, _, _ in ranked] == ["a", "c", "b"]
    assert [(c.a, c.b) for _, _, c in ranked[:-1]] == [("a", "c"), ("c", "b")]
    assert ranked[-1][2] is None
    assert ranked[0][1].mean == pytest.approx(1.0)
    assert all(c.distinguishable for _, _, c in ranked[:-1])


def test_rank_higher_is_better_reverses_the_order():
    ranked = rank(GROUPS, lower_is_better=False)
    assert [name for name, _, _ in ranked] == ["b", "c", "a"]
    assert [(c.a, c.b) for _, _, c in ranked[:-1]] == [("b", "c"), ("c", "a")]
    assert verdict(ranked[0][2], lower_is_better=False).startswith("b is better than c")


def test_rank_leaves_out_models_without_usable_scores_and_handles_one_model():
    ranked = rank({"a": [1.0, 2.0], "broken": [None, float("nan")]}, lower_is_better=True)
    assert [(name, c) for name, _, c in ranked] == [("a", None)]
    assert rank({}, lower_is_better=True) == []
