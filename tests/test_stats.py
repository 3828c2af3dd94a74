"""The confidence interval, sample size and verdicts behind `report --by arm` and `simulate --from-ledger`."""

from __future__ import annotations

import pytest

from dunctl.stats import compare, newcombe, sample_size, wilson

# Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10 (hybrid score, no continuity
# correction): the published limits for his worked examples.
NEWCOMBE_TABLE_II = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((6, 7, 2, 7), (0.0582, 0.8062)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ((0, 10, 0, 10), (-0.2775, 0.2775)),
    ((10, 10, 0, 20), (0.6791, 1.0000)),
]


@pytest.mark.parametrize("counts, limits", NEWCOMBE_TABLE_II)
def test_newcombe_interval_matches_the_published_table(counts, limits):
    d = newcombe(*counts)
    assert (round(d.low, 4), round(d.high, 4)) == limits


def test_hand_computed_case():
    # 56/70 against 48/80, by hand with z = 1.959964:
    # Wilson 56/70: centre (0.8 + z^2/140) / (1 + z^2/70) = 0.784393, half-width 0.092560 -> 0.691834 .. 0.876953
    # Wilson 48/80: centre (0.6 + z^2/160) / (1 + z^2/80) = 0.595418, half-width 0.104963 -> 0.490455 .. 0.700382
    # low  = 0.2 - sqrt((0.8 - 0.691834)^2 + (0.700382 - 0.6)^2) = 0.2 - 0.147569 = 0.052431
    # high = 0.2 + sqrt((0.876953 - 0.8)^2 + (0.6 - 0.490455)^2) = 0.2 + 0.133873 = 0.333873
    assert wilson(56, 70) == pytest.approx((0.691834, 0.876953), abs=1e-6)
    assert wilson(48, 80) == pytest.approx((0.490455, 0.700382), abs=1e-6)
    d = newcombe(56, 70, 48, 80)
    assert (d.difference, d.low, d.high) == pytest.approx((0.2, 0.052431, 0.333873), abs=1e-6)
    assert d.distinguishable


def test_sample_size_for_two_proportions():
    # Fleiss without continuity correction, alpha 0.05 two-sided, power 0.8:
    # 0.6 vs 0.5: (1.959964 * sqrt(2 * 0.55 * 0.45) + 0.841621 * sqrt(0.24 + 0.25))^2 / 0.01 = 387.3 -> 388
    assert sample_size(0.6, 0.5) == 388
    assert sample_size(0.5, 0.6) == 388
    assert sample_size(0.8, 0.6) == 82
    assert sample_size(0.5, 0.5) is None
    assert sample_size(0.52, 0.5) > sample_size(0.6, 0.5) > sample_size(0.8, 0.5)


def test_verdicts_in_plain_words():
    clear = compare("lean", 56, 70, "control", 48, 80)
    assert clear.verdict == "arm lean recovers 20.0 points more than control, 95% CI 5.2 to 33.4"
    worse = compare("lean", 48, 80, "control", 56, 70)
    assert worse.verdict.startswith("arm lean recovers 20.0 points fewer than control, 95% CI -33.4 to -5.2")
    unclear = compare("lean", 30, 60, "control", 27, 60)
    assert not unclear.distinguishable
    assert unclear.needed_per_arm == sample_size(0.5, 0.45) and unclear.more_per_arm == unclear.needed_per_arm - 60
    assert unclear.verdict.startswith(f"not yet distinguishable: about {unclear.more_per_arm:,} more cases per arm "
                                      "needed to detect 5.0 points")
    same = compare("lean", 20, 40, "control", 20, 40)
    assert same.needed_per_arm is None and "not yet distinguishable" in same.verdict
    empty = compare("lean", 0, 0, "control", 3, 9)
    assert empty.difference is None and "no cases yet in arm lean" in empty.verdict
