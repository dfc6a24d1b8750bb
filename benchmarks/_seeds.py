"""Synthetic cohort seeds that have been looked at, and fresh ones drawn from the clock.

A seed is used once it appears in `benchmarks/used_seeds.tsv` (every fresh draw is written
there before its cohort is made, so an interrupted run still spends it) or as "seed N" /
"seeds N, M and K" in docs/benchmarks.md or a config file. A fresh seed is none of those.
"""

import datetime
import re
import time
from pathlib import Path

import numpy as np
from _common import BENCHMARKS_MD, REPO_ROOT

USED_SEEDS = REPO_ROOT / "benchmarks" / "used_seeds.tsv"
_NAMED = re.compile(r"\bseeds?:?\s+((?:\d+)(?:(?:,\s*|\s+and\s+|\s*/\s*)\d+)*)", re.IGNORECASE)
_FRESH_RANGE = (100_000, 2**31 - 1)


class UsedSeedError(ValueError):
    """A seed offered as fresh has been used before."""


def seeds_named(text: str) -> set[int]:
    """Seeds a text names: "seed 2021", "seeds 3131, 5001 and 9001", "seed: 7001"."""
    return {int(n) for match in _NAMED.finditer(text) for n in re.findall(r"\d+", match[1])}


def used_seeds(registry: Path = USED_SEEDS) -> set[int]:
    texts = [BENCHMARKS_MD, REPO_ROOT / "config.yaml", *sorted(REPO_ROOT.glob("config/*.yaml"))]
    named = set().union(*(seeds_named(p.read_text()) for p in texts if p.exists()))
    if registry.exists():
        rows = registry.read_text().splitlines()[1:]
        named |= {int(row.split("\t")[0]) for row in rows if row.strip()}
    return named


def check_fresh(seed: int, used: set[int]) -> int:
    if seed in used:
        raise UsedSeedError(f"seed {seed} has been used ({USED_SEEDS.name} or the records)")
    return seed


def draw_fresh_seeds(k: int, purpose: str, registry: Path = USED_SEEDS) -> list[int]:
    """`k` seeds never used, from the clock, written to `registry` at once."""
    used = used_seeds(registry)
    rng = np.random.default_rng(time.time_ns())
    seeds: list[int] = []
    while len(seeds) < k:
        seed = int(rng.integers(*_FRESH_RANGE))
        if seed not in used and seed not in seeds:
            seeds.append(check_fresh(seed, used))
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = "" if registry.exists() else "seed\tdrawn\tpurpose\n"
    with registry.open("a") as handle:
        handle.write(header + "".join(f"{s}\t{now}\t{purpose}\n" for s in seeds))
    return seeds
