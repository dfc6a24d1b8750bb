"""The fresh-seed protocol of benchmarks/agatston_agreement.py: seeds never looked at, and a
seed once drawn or recorded is refused."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _seeds import UsedSeedError, check_fresh, draw_fresh_seeds, seeds_named, used_seeds


def test_seeds_are_read_as_the_records_write_them():
    text = "seed 2021; seeds 3131, 5001 and 9001 (seed: 7001), seeds 4242 / 8888. Seeds 12"
    assert seeds_named(text) == {2021, 3131, 5001, 9001, 7001, 4242, 8888, 12}


def test_recorded_and_drawn_seeds_are_refused(tmp_path):
    registry = tmp_path / "used_seeds.tsv"
    used = used_seeds(registry)
    # The training cohort's and the recorded external cohort's seeds.
    assert {2021, 7001} <= used
    with pytest.raises(UsedSeedError, match="seed 7001 has been used"):
        check_fresh(7001, used)
    drawn = draw_fresh_seeds(3, "test", registry)
    assert len(set(drawn)) == 3 and not set(drawn) & used
    now_used = used_seeds(registry)
    for seed in drawn:
        with pytest.raises(UsedSeedError, match=f"seed {seed}"):
            check_fresh(seed, now_used)
    again = draw_fresh_seeds(2, "test", registry)
    assert not set(again) & set(drawn)
    assert len(registry.read_text().splitlines()) == 1 + 5
