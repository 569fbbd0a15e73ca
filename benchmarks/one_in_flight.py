"""Where the time of one message in flight goes: ping-pong with one pair, per relayed
message, for each relay named.

    python benchmarks/one_in_flight.py
    python benchmarks/one_in_flight.py --patched-trio --strace --callgrind --opcodes \\
        --relay picows='python ../shared/bench/peers/picows_relay.py {port}'

For each relay, on a fresh process each time: round trips/s and p50 (``--rounds`` runs,
medians), and per relayed message (two per round trip) the relay's user and kernel CPU
(from /proc); with ``--strace``, its system calls (``strace -c`` attached for one run);
with ``--callgrind``, the instructions it executes (valgrind's callgrind, counting only
while the load runs: repeatable whatever else the machine does; ``--cache-sim`` adds its
simulated cache misses per message); with ``--opcodes``, for
a Python relay started with this interpreter, the bytecode instructions by package
(benchmarks/opcodes.py): which part is Trio's loop and which the relay's own code.

``--patched-trio`` adds trio_wsproxy on a copy of the installed Trio with
``trio-epoll-armed.patch`` applied (registrations stay armed while a task waits on the
same descriptor again: see the performance page), to measure the proposal for Trio.

Needs Node.js with npm (the load generator), and strace and valgrind for those options.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio
from compare import free_port, node_env, proc_times, started

HERE = Path(__file__).resolve().parent
SECONDS = 5
TRIO_WSPROXY = f"{sys.executable} -m trio_wsproxy serve --host 127.0.0.1 --port {{port}}"


def leaf(pid: int) -> int:
    """The process doing the relaying: the last of the first children (a wrapper's)."""
    while True:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return pid
        if not children:
            return pid
        pid = int(children[0])


def pingpong(port: int, seconds: int = SECONDS) -> dict[str, float]:
    """One pair's ping-pong on the Node load generator: its JSON result."""
    out = subprocess.run(
        [
            "node",
            str(HERE / "loadgen.js"),
            "pingpong",
            f"ws://127.0.0.1:{port}/ws",
            "pairs=1",
            f"seconds={seconds}",
        ],
        capture_output=True,
        text=True,
        env=node_env(),
        check=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    result["messages"] = result["round_trips_per_s"] * seconds * 2
    return result


def timed(command: str, env: dict[str, str] | None) -> dict[str, float]:
    port = free_port()
    with started(shlex.split(command.format(port=port)), port, env) as pid:
        pid = leaf(pid)
        user0, sys0 = proc_times(pid)
        result = pingpong(port)
        user1, sys1 = proc_times(pid)
    n = result["messages"]
    return {
        "round_trips_per_s": result["round_trips_per_s"],
        "p50_us": result["p50_ms"] * 1000,
        "user_us": (user1 - user0) * 1e6 / n,
        "kernel_us": (sys1 - sys0) * 1e6 / n,
    }


def syscalls(command: str, env: dict[str, str] | None) -> dict[str, float]:
    """System calls per relayed message, by name (strace -c attached for one run)."""
    port = free_port()
    argv = shlex.split(command.format(port=port))
    with started(argv, port, env) as pid, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "strace"
        tracer = subprocess.Popen(
            ["strace", "-c", "-f", "-o", str(out), "-p", str(leaf(pid))],
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        result = pingpong(port)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(10)
        calls: dict[str, float] = {}
        for line in out.read_text().splitlines():
            # % time  seconds  usecs/call  calls  [errors]  syscall
            fields = line.split()
            if len(fields) >= 5 and re.fullmatch(r"[\d.]+", fields[0]) and fields[-1] != "total":
                calls[fields[-1]] = int(fields[3]) / result["messages"]
    return {name: round(n, 2) for name, n in calls.items() if n >= 0.05}


def instructions(
    command: str, env: dict[str, str] | None, cache_sim: bool = False
) -> dict[str, float]:
    """Instructions executed per relayed message (callgrind, counting during the load);
    with ``cache_sim``, also callgrind's simulated cache misses per message (first-level
    instruction and data, and last-level), by its event names."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        argv = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            *(["--cache-sim=yes"] if cache_sim else []),
            f"--callgrind-out-file={out}",
            *shlex.split(command.format(port=port)),
        ]
        with started(argv, port, env, timeout=120) as pid:  # (valgrind starts slowly)
            subprocess.run(
                ["callgrind_control", "-i", "on", str(pid)], check=True, capture_output=True
            )
            result = pingpong(port, seconds=10)
            for control in ("-i", "off"), ("-d",):  # (stop counting, write the counts)
                subprocess.run(
                    ["callgrind_control", *control, str(pid)], check=True, capture_output=True
                )
        totals: dict[str, int] = {}
        for dump in Path(tmp).glob("callgrind.out*"):
            text = dump.read_text()
            events = re.search(r"^events: (.+)$", text, re.MULTILINE)
            counts = re.search(r"^totals: (.+)$", text, re.MULTILINE)
            if events and counts:
                # (callgrind leaves out trailing zeros: fewer counts than events)
                names, values = events.group(1).split(), counts.group(1).split()
                for name, count in zip(names, values, strict=False):
                    totals[name] = totals.get(name, 0) + int(count)
    n = result["messages"]
    return {name: round(count / n, 1) for name, count in totals.items()}


def opcodes(command: str, env: dict[str, str] | None) -> dict[str, float]:
    """Bytecode instructions per relayed message by package (a Python relay started
    with this interpreter)."""
    argv = shlex.split(command)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "opcodes.json"
        traced = [sys.executable, str(HERE / "opcodes.py"), str(out), *argv[1:]]
        with started([part.format(port=port) for part in traced], port, env) as pid:
            # A short warm-up uncounted, then a counted run.
            pingpong(port, seconds=1)
            os.kill(pid, signal.SIGUSR2)
            result = pingpong(port, seconds=SECONDS)
            os.kill(pid, signal.SIGUSR1)
            deadline = time.time() + 10
            while not out.exists() and time.time() < deadline:
                time.sleep(0.05)
            counted = json.loads(out.read_text())
    n = result["messages"]
    return {name: round(count / n) for name, count in counted["by_package"].items()}


def patched_trio(into: Path) -> Path:
    """A copy of the installed Trio with trio-epoll-armed.patch applied; its folder."""
    shutil.copytree(Path(trio.__file__).parent, into / "trio")
    subprocess.run(
        ["patch", "-s", "-p1", "-d", str(into), "-i", str(HERE / "trio-epoll-armed.patch")],
        check=True,
    )
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--relay",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="another relay, its command with {port}",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--patched-trio", action="store_true")
    parser.add_argument("--strace", action="store_true")
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--opcodes", action="store_true")
    parser.add_argument(
        "--cache-sim",
        action="store_true",
        help="--callgrind with its cache simulation: misses per message (I1mr, D1mr, ...)",
    )
    args = parser.parse_args()
    # name: (command, environment or None for this one's)
    relays: dict[str, tuple[str, dict[str, str] | None]] = {"trio_wsproxy": (TRIO_WSPROXY, None)}
    with tempfile.TemporaryDirectory() as tmp:
        if args.patched_trio:
            path = os.pathsep.join([str(patched_trio(Path(tmp))), *sys.path[1:]])
            relays["trio_wsproxy (patched Trio)"] = (
                TRIO_WSPROXY,
                {**os.environ, "PYTHONPATH": path},
            )
        for spec in args.relay:
            name, _, command = spec.partition("=")
            relays[name] = (command, None)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in relays}
        for _ in range(args.rounds):  # (interleaved by round)
            for name, (command, env) in relays.items():
                runs[name].append(timed(command, env))
        for name, (command, env) in relays.items():
            row: dict[str, object] = {"relay": name}
            for key in runs[name][0]:
                row[key] = round(statistics.median(run[key] for run in runs[name]), 1)
            if args.strace and shutil.which("strace"):
                row["syscalls_per_message"] = syscalls(command, env)
            if (args.callgrind or args.cache_sim) and shutil.which("valgrind"):
                counted = instructions(command, env, cache_sim=args.cache_sim)
                row["instructions_per_message"] = round(counted.pop("Ir", 0))
                if counted:
                    row["cache_events_per_message"] = counted
            if args.opcodes and shlex.split(command)[0] == sys.executable:
                row["opcodes_per_message"] = opcodes(command, env)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
