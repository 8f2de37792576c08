"""Where a Konan model server spends its CPU: wrk drives a konan-onnx server, py-spy samples it.

    .venv/bin/pip install py-spy        # once; benchmark-only, not a Konan dependency
    .venv/bin/python bench/profile_server.py            # LR, 1 row, 16 connections, 10 s
    .venv/bin/python bench/profile_server.py --model rf --no-profile   # CPU per request only

Prints requests/s, the server's CPU time per request (utime + stime from /proc, so it does not
depend much on how busy the rest of the machine is), its context switches per request (threads
handing the GIL to each other), and with py-spy the functions with the most
samples (self and inclusive). Uses serving.py's model, key endpoint and server start-up.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from sklearn.datasets import make_classification

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving as bs  # bench/ is not a package: its folder goes on sys.path first


def cpu_seconds(pid: int, *, kernel_only: bool = False) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[12]) if kernel_only else int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds by thread id (the main thread's id is the process id)."""
    found: dict[int, float] = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf(
            "SC_CLK_TCK"
        )
    return found


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches over the process's threads: a thread handing
    the GIL back and forth shows here first."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:  # the thread ended
            continue
        for line in text.splitlines():
            if line.endswith("ctxt_switches:") or "ctxt_switches:" in line:
                total += int(line.split()[1])
    return total


def top(raw: Path, count: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        samples = int(n)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    print(f"{total} samples")
    for frame, samples in own.most_common(count):
        print(f"{100 * samples / total:5.1f}% self  {frame}")
    for frame, samples in inclusive.most_common(count):
        print(f"{100 * samples / total:5.1f}% incl  {frame}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["lr", "rf"], default="lr")
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    profile = not args.no_profile
    if profile and not Path(spy).exists():
        print("py-spy is not installed: .venv/bin/pip install py-spy (or pass --no-profile)")
        return 2
    root = Path(tempfile.mkdtemp(prefix="konan-profile-"))
    X, y = make_classification(n_samples=50_000, n_features=20, random_state=42)
    model = bs.train(args.model, X, y)
    secret = "kn_profile_secret_00000000000001"  # noqa: S105 (a throw-away key for one run)
    keys = bs.start_key_server(secret)
    keys_url = f"http://127.0.0.1:{keys.server_address[1]}/keys"
    server = bs.start_konan(
        root, args.model, "onnx", bs.to_onnx_bytes(model), keys_url, secret, None, []
    )
    try:
        body = root / "body.json"
        body.write_bytes(orjson.dumps(bs.body_for(X, args.rows)))
        env = dict(os.environ, WRK_BODY_FILE=str(body), WRK_AUTH=server.auth)
        raw = root / "profile.txt"
        sampler = None
        if profile:
            seconds = str(args.duration + 1)
            command = [spy, "record", "-p", str(server.pid), "-d", seconds, "-r", "250"]
            command += ["-f", "raw", "-o", str(raw), "--nonblocking"]
            sampler = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(0.5)
        lua = str(Path(__file__).parent / "lua" / "post.lua")
        before = cpu_seconds(server.pid)
        kernel = cpu_seconds(server.pid, kernel_only=True)
        switches = context_switches(server.pid)
        by_thread = thread_cpu_seconds(server.pid)
        wrk = subprocess.run(
            [
                *("wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "-s"),
                lua,
                server.url,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        used = cpu_seconds(server.pid) - before
        kernel = cpu_seconds(server.pid, kernel_only=True) - kernel
        switches = context_switches(server.pid) - switches
        after = thread_cpu_seconds(server.pid)
        main_thread = after.get(server.pid, 0.0) - by_thread.get(server.pid, 0.0)
        doc = json.loads(wrk.stdout.split("WRK_JSON ")[1].splitlines()[0])
        requests = doc["requests"]
        rate = requests / doc["duration_us"] * 1e6
        print(
            f"{args.model}, {args.rows} row(s), {args.connections} connections: {rate:,.0f} req/s"
        )
        print(
            f"server CPU per request: {used / requests * 1e6:,.0f} µs "
            f"({kernel / requests * 1e6:,.0f} µs of it in the kernel: sockets, files)"
        )
        print(
            f"  of which the event-loop thread {main_thread / requests * 1e6:,.0f} µs, other "
            f"threads (log producer, key refresh) {(used - main_thread) / requests * 1e6:,.0f} µs"
        )
        print(f"server context switches per request: {switches / requests:.2f}")
        if sampler is not None:
            sampler.wait()
            top(raw, 20)
    finally:
        server.proc.terminate()
        server.proc.wait(10)
        keys.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
