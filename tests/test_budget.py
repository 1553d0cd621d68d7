"""Equal-budget arithmetic on constructed curves: reading a curve at a budget (in log-compute,
never extrapolated), the compute to reach a quality, the seeds' band, the budgets and the
Pareto front."""

from __future__ import annotations

import math

import pytest

from gen import budget

# A curve at 1e6, 1e7, 1e8 FLOPs: FID 100, 40, 10.
CURVE = [(1e6, 100.0), (1e7, 40.0), (1e8, 10.0)]


def test_a_curve_is_read_linearly_in_log_compute_between_its_points():
    assert budget.interpolate(CURVE, 1e7) == 40.0
    # sqrt(1e7 * 1e8) is half-way in log-compute: half-way between 40 and 10.
    assert budget.interpolate(CURVE, math.sqrt(1e7 * 1e8)) == pytest.approx(25.0)
    # 2e6 is log10(2) = 0.301 of the way from 1e6 to 1e7.
    assert budget.interpolate(CURVE, 2e6) == pytest.approx(100 - 60 * math.log10(2))
    assert budget.interpolate(CURVE, 1e8) == 10.0  # its last point: trained exactly that far


def test_a_curve_is_never_extrapolated():
    assert budget.interpolate(CURVE, 1.01e8) is None  # not trained that far
    assert budget.interpolate(CURVE, 9e5) is None  # not measured that early
    assert budget.interpolate([], 1e6) is None
    assert budget.interpolate([(0.0, 300.0)], 1e6) is None  # zero compute has no log


def test_the_compute_to_reach_a_quality_is_the_first_crossing_in_log_compute():
    # 25 is crossed half-way (in log) between 1e7 (40) and 1e8 (10).
    assert budget.first_reach(CURVE, 25.0) == pytest.approx(math.sqrt(1e7 * 1e8))
    assert budget.first_reach(CURVE, 40.0) == 1e7  # reached exactly at a point
    assert budget.first_reach(CURVE, 500.0) == 1e6  # already there at its first point
    assert budget.first_reach(CURVE, 5.0) is None  # never reached
    # The first crossing counts, not a later one after the curve went back up.
    bumpy = [(1e6, 50.0), (1e7, 20.0), (1e8, 60.0), (1e9, 15.0)]
    assert budget.first_reach(bumpy, 30.0) == pytest.approx(10 ** (6 + 2 / 3))


def test_compute_is_joined_to_values_by_step_and_interpolated_between_logged_steps():
    compute = [(10, 100.0), (20, 200.0), (40, 480.0)]
    values = [(0, 9.0), (10, 5.0), (15, 4.0), (30, 3.0), (50, 2.0)]
    got = budget.on_steps(values, compute)
    # Step 0 spent nothing; 15 is half-way from 100 to 200; 30 half-way from 200 to 480; 50 is
    # past the last logged step: dropped.
    assert got == [(0, 0.0, 9.0), (10, 100.0, 5.0), (15, 150.0, 4.0), (30, 340.0, 3.0)]


def test_the_band_is_mean_min_and_max_where_every_seed_has_a_curve():
    a = [(1e6, 100.0), (1e7, 40.0), (1e8, 10.0)]
    b = [(1e6, 80.0), (1e7, 20.0)]  # a shorter run
    got = budget.band([a, b])
    assert got == [(1e6, 90.0, 80.0, 100.0), (1e7, 30.0, 20.0, 40.0)]
    # Seeds measured at other computes are read at each other's points.
    c = [(2e6, 60.0), (2e7, 30.0)]
    x, mean, low, high = budget.band([a, c])[0]
    assert x == 2e6 and low == 60.0 and high == pytest.approx(100 - 60 * math.log10(2))


def test_budgets_are_the_cheapest_median_and_second_largest_finish():
    finishes = {"a": 1e6, "b": 1e8, "c": 1e7, "d": 1e9, "baseline": 0.0}
    assert budget.budgets(finishes) == [
        ("cheapest finish: a", 1e6),
        ("median finish", pytest.approx(5.5e7)),
        ("second-largest finish: b", 1e8),
    ]
    # Three: the median is the middle model's finish, which is also the second largest.
    assert budget.budgets({"a": 1e6, "b": 1e7, "c": 1e8}) == [
        ("cheapest finish: a", 1e6),
        ("median finish: b", 1e7),
    ]
    # Two models: the median lies between them, the second largest is the cheapest (once).
    assert [x for _, x in budget.budgets({"a": 1e6, "b": 3e6})] == [1e6, 2e6]
    assert budget.budgets({"baseline": 0.0}) == []


def test_the_pareto_front_keeps_ties_and_drops_dominated_points():
    points = {
        "cheap": (1.0, 50.0),  # cheapest: on the front
        "mid": (10.0, 20.0),  # on the front
        "twin": (10.0, 20.0),  # equal to mid: neither dominates the other
        "worse": (10.0, 30.0),  # same cost as mid, worse quality: dominated
        "costly": (100.0, 20.0),  # same quality as mid at more cost: dominated
        "best": (1000.0, 5.0),  # best quality: on the front
        "waste": (2000.0, 60.0),  # dominated by everything
    }
    assert budget.pareto_front(points) == ["cheap", "mid", "twin", "best"]
    assert budget.pareto_front({"only": (0.0, 1.0)}) == ["only"]
    assert budget.pareto_front({}) == []


def test_the_settled_step_is_the_first_whose_seed_mean_is_within_the_tolerance_of_the_best():
    seed0 = [(125, 9.0), (250, 5.0), (500, 4.1), (1000, 4.0), (2000, 4.05)]
    seed1 = [(125, 8.0), (250, 6.0), (500, 4.3), (1000, 4.0), (2000, 3.95)]
    # means: 8.5, 5.5, 4.2, 4.0, 4.0; best 4.0; within 5% means <= 4.2
    assert budget.settled_step([seed0, seed1], 0.05) == (500, pytest.approx(4.2), 4.0)
    assert budget.settled_step([seed0, seed1], 0.01)[0] == 1000


def test_a_curve_still_improving_at_its_end_settles_on_its_last_step():
    falling = [(100, 10.0), (200, 8.0), (400, 6.0)]
    assert budget.settled_step([falling, falling], 0.05) == (400, 6.0, 6.0)


def test_only_steps_every_seed_measured_count_and_nan_points_are_not_measured():
    seed0 = [(100, 4.0), (200, 3.0), (400, 3.0)]
    seed1 = [(100, float("nan")), (200, 3.0), (400, 3.0)]  # step 100 unmeasured in seed 1
    assert budget.settled_step([seed0, seed1], 0.5)[0] == 200
    assert budget.settled_step([[(100, 1.0)], [(200, 1.0)]], 0.05) is None
    assert budget.settled_step([], 0.05) is None
