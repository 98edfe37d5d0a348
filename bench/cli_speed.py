"""How long the ``cfcd`` command takes to answer --help and argument errors, and what it imports.

Each case runs ``python -m cfcd ...`` in a fresh process ``--repeats`` times; the table gives the
median wall time, and the heavy packages (torch, torchvision, faiss, numpy) the case imported
(``python -X importtime``). A plain ``python -c pass`` is the floor.

    .venv/bin/python bench/cli_speed.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

from cfcd.cli import COMMANDS

HEAVY = ("torch", "torchvision", "faiss", "numpy")


def cases() -> list[tuple[str, list[str]]]:
    rows = [("python -c pass (floor)", ["-c", "pass"]), ("cfcd --help", ["-m", "cfcd", "--help"])]
    rows += [(f"cfcd {name} --no-such-option", ["-m", "cfcd", name, "--no-such-option"]) for name in COMMANDS]
    return rows


def measure(argv: list[str], repeats: int) -> tuple[float, list[str]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, *argv], capture_output=True)
        times.append(time.perf_counter() - start)
    imports = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True).stderr
    loaded = {line.split("|")[-1].strip().split(".")[0] for line in imports.splitlines() if "|" in line}
    return statistics.median(times), [h for h in HEAVY if h in loaded]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; Python {platform.python_version()}")
    print(f"command: .venv/bin/python bench/cli_speed.py --repeats {args.repeats}\n")
    print("| case | median s | heavy imports |\n|---|---:|---|")
    for name, argv in cases():
        seconds, heavy = measure(argv, args.repeats)
        print(f"| `{name}` | {seconds:.2f} | {', '.join(heavy) or '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
