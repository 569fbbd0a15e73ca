"""wsproxy.v1 fan-out against plain fan-out on the same relay, interleaved by round.

    python benchmarks/v1_fanout.py                # fanout 1x10 and 200x2, 3 rounds
    python benchmarks/v1_fanout.py --rounds 5

v1 members send a header line before each payload and receive their sender's id before
it (docs/protocol.md); the relay frames each message once for its v1 members. Prints the
median deliveries/s and relay CPU per delivery of each, and v1 / plain.
"""

from __future__ import annotations

import argparse
import statistics

from compare import node_env, run_once

LOADS = ["fanout groups=1 size=10", "fanout groups=200 size=2 window=4"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--relay", default="trio-wsproxy serve --host 127.0.0.1 --port {port}")
    args = parser.parse_args()
    env = node_env()
    for load in LOADS:
        rates: dict[str, list[float]] = {"plain": [], "v1": []}
        cpu: dict[str, list[float]] = {"plain": [], "v1": []}
        for _ in range(args.rounds):
            for kind, extra in (("plain", ""), ("v1", " v1=1")):
                result = run_once(args.relay, load + extra, env)
                rates[kind].append(result["delivered_per_s"])
                deliveries = result["delivered_per_s"] * result.get("seconds", 5.0)
                cpu[kind].append(result["relay_cpu_s"] / deliveries * 1e6)
        plain, v1 = statistics.median(rates["plain"]), statistics.median(rates["v1"])
        print(
            f"{load:40} plain {plain:10.0f}/s {statistics.median(cpu['plain']):5.2f} µs"
            f"   v1 {v1:10.0f}/s {statistics.median(cpu['v1']):5.2f} µs"
            f"   v1/plain {v1 / plain:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
