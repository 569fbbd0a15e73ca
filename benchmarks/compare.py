"""Side-by-side relay benchmark: trio_wsproxy against asyncio ``websockets`` (and Node
``ws`` when asked), on the same Node load generator, printing ratios.

    python benchmarks/compare.py                 # the headline workloads, 3 rounds
    python benchmarks/compare.py --rounds 1 --only pingpong
    python benchmarks/compare.py --relay node-ws='node my_relay.js {port}'

Needs: this project installed, ``pip install websockets``, and Node.js with npm (the load
generator's ``ws`` package is installed once into ~/.cache/trio-wsproxy-benchmarks).
Relays run one at a time, interleaved by round, on a free loopback port; the relay's CPU
time and peak memory come from /proc (Linux). Figures from one machine compare only
within one run: read the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
NODE_DIR = Path(
    os.environ.get("BENCH_NODE_DIR", Path.home() / ".cache" / "trio-wsproxy-benchmarks")
)

RELAYS = {
    "trio_wsproxy": f"{sys.executable} -m trio_wsproxy serve --host 127.0.0.1 --port {{port}}",
    "websockets": f"{sys.executable} {HERE / 'websockets_relay.py'} {{port}}",
}
# (name, load generator arguments, the figure judged, whether more is better)
WORKLOADS = [
    ("fanout-1x10", "fanout groups=1 size=10", "delivered_per_s", True),
    ("fanout-50x4", "fanout groups=50 size=4 window=8", "delivered_per_s", True),
    ("fanout-200x2", "fanout groups=200 size=2 window=4", "delivered_per_s", True),
    ("pingpong", "pingpong pairs=20", "round_trips_per_s", True),
    ("bulk-256MiB", "bulk mb=256 count=2", "mib_per_s", True),
    ("bulk-256MiB-memory", "bulk mb=256 count=2", "relay_peak_mib", False),
    ("idle-10000-memory", "idle conns=10000 size=4", "rss_connected_mib", False),
]


def node_env() -> dict[str, str]:
    modules = NODE_DIR / "node_modules"
    if not (modules / "ws").is_dir():
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        deps = json.loads((HERE / "package.json").read_text())["dependencies"]
        subprocess.run(
            ["npm", "install", "--silent", "--no-save", "--prefix", str(NODE_DIR)]
            + [f"{name}@{version}" for name, version in deps.items()],
            check=True,
        )
    return {**os.environ, "NODE_PATH": str(modules)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_times(pid: int) -> tuple[float, float]:
    """User and kernel CPU seconds of ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def proc_cpu(pid: int) -> float:
    return sum(proc_times(pid))


def proc_mem(pid: int) -> dict[str, float]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmHWM", "VmRSS")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) / 1024
    return out


@contextmanager
def started(
    argv: list[str], port: int, env: dict[str, str] | None = None, timeout: float = 20
) -> Iterator[int]:
    """Start a relay in a session of its own and wait until it listens on ``port``;
    yield its pid; stop it (and what it started) after."""
    relay = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.time() + timeout
        while True:
            if relay.poll() is not None:
                raise RuntimeError(f"relay exited with {relay.returncode}: {argv}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"relay did not listen in time: {argv}") from None
                time.sleep(0.05)
        time.sleep(0.3)
        yield relay.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(relay.pid, signal.SIGTERM)
        try:
            relay.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(relay.pid, signal.SIGKILL)
            relay.wait()


def run_once(command: str, load: str, env: dict[str, str]) -> dict[str, float]:
    port = free_port()
    with started(shlex.split(command.format(port=port)), port) as pid:
        cpu0 = proc_cpu(pid)
        generator = subprocess.Popen(
            [
                "node",
                str(HERE / "loadgen.js"),
                load.split()[0],
                f"ws://127.0.0.1:{port}/ws",
                *load.split()[1:],
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert generator.stdout is not None
        result: dict[str, float] = {}
        for line in generator.stdout:
            data = json.loads(line)
            if data.get("event") == "connected":
                result["rss_connected_mib"] = proc_mem(pid).get("VmRSS", 0.0)
            else:
                result.update({k: v for k, v in data.items() if isinstance(v, int | float)})
        generator.wait()
        result["relay_cpu_s"] = proc_cpu(pid) - cpu0
        result["relay_peak_mib"] = proc_mem(pid).get("VmHWM", 0.0)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", action="append", help="workload name (repeatable)")
    parser.add_argument(
        "--relay", action="append", default=[], help="NAME='COMMAND with {port}' to add"
    )
    args = parser.parse_args()
    relays = dict(RELAYS)
    for spec in args.relay:
        name, _, command = spec.partition("=")
        if "{port}" not in command:
            parser.error(f"--relay {spec!r}: give NAME='COMMAND with {{port}}'")
        relays[name] = command
    env = node_env()
    wanted = [w for w in WORKLOADS if not args.only or w[0] in args.only]
    cache: dict[tuple[str, str, int], dict[str, float]] = {}
    print(
        f"{'workload':22} "
        + " ".join(f"{name:>14}" for name in relays)
        + "   ratios to trio_wsproxy"
    )
    for name, load, figure, more_is_better in wanted:
        samples: dict[str, list[float]] = {relay: [] for relay in relays}
        for round_ in range(args.rounds):
            for relay, command in relays.items():
                key = (relay, load, round_)
                if key not in cache:
                    cache[key] = run_once(command, load, env)
                samples[relay].append(cache[key].get(figure, float("nan")))
        medians = {relay: statistics.median(values) for relay, values in samples.items()}
        base = medians["trio_wsproxy"]
        ratios = [
            f"{relay}: {(base / m if more_is_better else m / base):.2f}x"
            for relay, m in medians.items()
            if relay != "trio_wsproxy" and m
        ]
        print(
            f"{name:22} "
            + " ".join(f"{medians[relay]:14.1f}" for relay in relays)
            + f"   ({figure}; trio_wsproxy vs {', '.join(ratios)})",
            flush=True,
        )


if __name__ == "__main__":
    main()
