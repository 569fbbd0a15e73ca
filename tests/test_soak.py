"""A short run of benchmarks/soak.py: members join, talk, leave (some rudely) for a few
seconds; afterwards the relay is empty and its memory near where it started."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).parent.parent / "benchmarks" / "soak.py"


def test_a_short_soak_leaves_an_empty_relay_with_flat_memory() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(SOAK),
            "--members",
            "100",
            "--groups",
            "10",
            "--seconds",
            "4",
            "--rounds",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["joins"] > 100 and figures["dropped"] > 0 and figures["received"] > 0
    assert figures["relay_empty_after_each_round"]
    assert figures["rss_growth_after_first_round_mib"] <= 5
    assert figures["ok"], figures
    assert result.returncode == 0
