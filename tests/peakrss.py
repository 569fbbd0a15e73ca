"""Run a Python script as ``python peakrss.py SCRIPT ARGS...`` would run it directly, then
write its peak memory (VmHWM, Linux) on stderr as ``peak_rss_mib=N`` — read by the
tests that bound a process's memory, since a process's /proc entry is gone once it exits."""

from __future__ import annotations

import os
import runpy
import sys

from relayproc import peak_rss_mib  # (this script's folder is on sys.path)

if __name__ == "__main__":
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.stderr.write(f"\npeak_rss_mib={peak_rss_mib(os.getpid()):.1f}\n")
