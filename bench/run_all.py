"""Every benchmark of issue 7 in one command: serving (Konan, bare FastAPI, MLflow, BentoML),
prediction logging into PostgreSQL (and the ingest probe: where the monitor's time goes), drift
(Konan's rollups, Evidently, scipy; and drift_bench.py's rollup and ingest rates), and the
deployment lifecycle.

    .venv/bin/python bench/run_all.py            # the full default runs, ~40 minutes
    .venv/bin/python bench/run_all.py --quick    # a smoke run of everything, ~6 minutes
    .venv/bin/python bench/run_all.py --only serving,logging

Each benchmark runs as its own process (its table is printed as it finishes, and again at the
end); the peers' venvs under bench/.venvs/ are created on first use. Needs wrk (Debian: apt-get
install wrk), PostgreSQL on 127.0.0.1:5432 (trust auth) and Redis on 127.0.0.1:6379. Writes
bench/results/run_all-<time>.json holding each benchmark's JSON (or why it failed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from lib.common import BENCH, RESULTS, ROOT, machine, write_results

# name: (script, full arguments, quick arguments, the prefix of the JSON it writes)
BENCHMARKS: dict[str, tuple[str, list[str], list[str], str]] = {
    "serving": (
        "serving.py",
        [],
        ["--duration", "2", "--rounds", "1", "--warmup", "1", "--connections", "16"],
        "serving-",
    ),
    "logging": (
        "logging_bench.py",
        ["--profile"],
        ["--duration", "3", "--servers", "1"],
        "logging-",
    ),
    "ingest_probe": ("ingest_probe.py", [], ["--records", "2000"], "ingest_probe-"),
    "drift": (
        "drift_bench.py",
        [],
        ["--rows", "100000", "--ingest-records", "2000", "--repeat", "2"],
        "drift_bench-",
    ),
    "drift_peers": (
        "drift_peers.py",
        [],
        ["--rows", "100000"],
        "drift_peers-",
    ),
    "lifecycle": ("lifecycle.py", [], ["--rounds", "1"], "lifecycle-"),
}


def newest(prefix: str, since: float) -> Path | None:
    found = [p for p in RESULTS.glob(f"{prefix}*.json") if p.stat().st_mtime >= since]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def table_part(output: str) -> str:
    """The table (and what follows it) from a benchmark's output: from the line before the
    first box-drawing top border (the title) to the end."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.lstrip().startswith(("┏", "backend "))]
    if not starts:
        return "\n".join(lines[-20:])
    first = starts[0]
    if lines[first].lstrip().startswith("┏"):  # a Rich table: its title is above (1-2 lines)
        while first > 0 and starts[0] - first < 2 and lines[first - 1].startswith(" "):
            first -= 1
    return "\n".join(lines[first:])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short smoke runs of everything")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    args = parser.parse_args()
    chosen = [n for n in args.only.split(",") if n]
    unknown = [n for n in chosen if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")

    env_python = sys.executable
    combined: dict[str, Any] = {"machine": machine(), "quick": args.quick, "benchmarks": {}}
    outputs: dict[str, str] = {}
    for name in chosen:
        script, full, quick, prefix = BENCHMARKS[name]
        cmd = [env_python, str(BENCH / script), *(quick if args.quick else full)]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        started = time.time()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line)
        rc = proc.wait()
        outputs[name] = "".join(lines)
        result = newest(prefix, started)
        entry: dict[str, Any] = {
            "command": " ".join(cmd[1:]),
            "exit_code": rc,
            "seconds": round(time.time() - started, 1),
        }
        if rc == 0 and result is not None:
            entry["json"] = str(result.relative_to(ROOT))
            entry["result"] = orjson.loads(result.read_bytes())
        else:
            entry["error"] = "".join(lines[-5:]).strip() or f"exit {rc}, no JSON written"
        combined["benchmarks"][name] = entry

    print("\n\n######## all tables ########")
    for name in chosen:
        entry = combined["benchmarks"][name]
        print(f"\n=== {name} ({entry['seconds']:.0f} s, exit {entry['exit_code']})")
        print(table_part(outputs[name]) if entry["exit_code"] == 0 else entry["error"])
    path = write_results("run_all", combined)
    print(f"\ncombined JSON: {path.relative_to(ROOT)}")
    failed = [n for n in chosen if combined["benchmarks"][n]["exit_code"] != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
