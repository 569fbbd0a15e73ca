"""permessage-deflate: bytes on the wire and relay CPU per delivery, compression on and
off, for the demo's chat envelopes, presence lists of 500 members and random bytes.

    python benchmarks/compression.py [--rounds 3] [--threshold 128] [--seconds 5]

Every member of the Node load generator (loadgen.js, ``deflate=1``) offers
permessage-deflate; the relays are trio_wsproxy without ``--compression`` (it declines:
plain frames), with it, and asyncio ``websockets`` with its own compression (per
connection) and without. For each body and load, prints one JSON line per relay with
the medians of ``--rounds`` runs: deliveries/s, the relay's CPU µs per delivery and the
bytes the receivers read per delivery, and those figures' ratios to trio_wsproxy off.
Needs Node.js with npm, and ``pip install websockets`` for the peer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from compare import node_env, run_once

HERE = Path(__file__).resolve().parent
# At one rate for every relay (deliveries/s: chat and random 18,000 and 15,000; presence
# lists 4,500 and 4,500), so that CPU per delivery compares the work, not how well each
# relay batches at its own top speed; low enough that the load generator, inflating on
# the same two cores, keeps up.
LOADS = {"1x10": "fanout groups=1 size=10", "50x4": "fanout groups=50 size=4 window=8"}
RATES = {("1x10", False): 2000, ("50x4", False): 100, ("1x10", True): 500, ("50x4", True): 30}
BODIES = {"chat": "body=chat", "presence": "body=presence", "random": "body=random payload=1024"}


def relays(threshold: int) -> dict[str, str]:
    serve = f"{sys.executable} -m trio_wsproxy serve --host 127.0.0.1 --port {{port}}"
    peer = f"{sys.executable} {HERE / 'websockets_relay.py'} {{port}}"
    return {
        "off": serve,
        "on": f"{serve} --compression {threshold}",
        "websockets-off": peer,
        "websockets-on": f"{peer} deflate",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threshold", type=int, default=128)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="relay names (off on websockets-off ...)")
    parser.add_argument("--bodies", nargs="*", default=list(BODIES))
    parser.add_argument("--loads", nargs="*", default=list(LOADS))
    args = parser.parse_args()
    env = node_env()
    chosen = {k: v for k, v in relays(args.threshold).items() if not args.only or k in args.only}
    for body in args.bodies:
        for load in args.loads:
            rate = RATES[load, body == "presence"]
            spec = f"{LOADS[load]} {BODIES[body]} rate={rate} deflate=1 seconds={args.seconds}"
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in chosen}
            for _ in range(args.rounds):
                for name, command in chosen.items():  # interleaved by round
                    result = run_once(command, spec, env)
                    result["cpu_us_per_delivery"] = (
                        1e6 * result["relay_cpu_s"] / max(1.0, result.get("delivered", 0.0))
                    )
                    runs[name].append(result)
            medians = {
                name: {
                    key: statistics.median(run[key] for run in results)
                    for key in (
                        "delivered_per_s",
                        "cpu_us_per_delivery",
                        "wire_bytes_per_delivery",
                        "negotiated",
                    )
                }
                for name, results in runs.items()
            }
            base = medians.get("off")
            for name, figures in medians.items():
                line: dict[str, object] = {"body": body, "load": load, "relay": name}
                line.update({k: round(v, 2) for k, v in figures.items()})
                if base is not None:
                    line["ratio_to_off"] = {
                        k: round(v / base[k], 3) if base[k] else None
                        for k, v in figures.items()
                        if k != "negotiated"
                    }
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
