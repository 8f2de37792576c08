"""Lifecycle benchmark: how long the platform's own steps take, in seconds (medians).

Each round starts `konan up` on a fresh data dir (a subprocess, KONAN_ADMIN_PASSWORD set) and
drives it with the SDK (konan.Client), polling every 50 ms:

- up:       `konan up` started -> GET /readyz answers 200
- register: client.register_model(LogisticRegression, reference data) returns (version 1)
- deploy:   client.deploy(wait=None) sent -> first 200 on POST /api/v1/deployments/{d}/predict
- canary:   set_traffic(champion 1, canary 2, weight 0.5) sent -> first answer from version 2
- promote:  client.promote() sent -> start of an unbroken run of answers all from version 2
            (the run must last --streak answers, 20 by default = 1 s of 50 ms polls)
- rollback: client.rollback(revision=<the first revision>) sent -> start of an unbroken run of
            answers all from version 1 (a plain rollback returns to the canary revision)

Failed predictions (anything but 200) during promote and rollback are counted.

    .venv/bin/python bench/lifecycle.py               # 3 rounds, ~2 minutes
    .venv/bin/python bench/lifecycle.py --rounds 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
from lib.common import ROOT, free_port, http_status, machine, median, wait_for, write_results

PASSWORD = "bench-admin-password-1"  # noqa: S105 - a throwaway admin for a loopback instance
POLL = 0.05
STEPS = ("up", "register", "deploy", "canary", "promote", "rollback")


def start_konan_up(data_dir: Path, port: int) -> tuple[subprocess.Popen[bytes], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KONAN_")}
    env["KONAN_ADMIN_PASSWORD"] = PASSWORD
    konan = Path(sys.executable).with_name("konan")
    log = (data_dir.parent / f"up-{port}.log").open("wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(konan), "up", "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=data_dir.parent,
        start_new_session=True,
    )

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"konan up exited with {proc.returncode}; see {log.name}")
        return http_status(f"http://127.0.0.1:{port}/readyz", timeout=1.0) == 200

    wait_for(ready, timeout=120, interval=POLL)
    return proc, time.perf_counter() - t0


def stop_konan_up(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: stops everything it started
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


class Poller:
    """POSTs one row to the control plane's predict route and reports who answered."""

    def __init__(self, url: str, deployment: str, key: str, row: dict[str, float]) -> None:
        self.http = httpx2.Client(timeout=10.0)
        self.url = f"{url}/api/v1/deployments/{deployment}/predict"
        self.headers = {"Authorization": f"Bearer {key}"}
        self.body = {"inputs": [row]}

    def once(self) -> tuple[int, int | None]:
        try:
            r = self.http.post(self.url, json=self.body, headers=self.headers)
        except httpx2.HTTPError:
            return 0, None
        if r.status_code != 200:
            return r.status_code, None
        version: int = r.json()["model_version"]
        return 200, version

    def until(self, predicate: Callable[[int, int | None], bool], timeout: float = 60) -> float:
        """Seconds until the first answer that satisfies `predicate`."""
        t0 = time.perf_counter()
        seen: dict[tuple[int, int | None], int] = {}
        while time.perf_counter() - t0 < timeout:
            status, version = self.once()
            if predicate(status, version):
                return time.perf_counter() - t0
            seen[status, version] = seen.get((status, version), 0) + 1
            time.sleep(POLL)
        raise TimeoutError(f"no matching answer; (status, version) seen: {seen}")

    def switch(self, action: Callable[[], Any], want: int, streak: int) -> tuple[float, int, int]:
        """Run `action`, then poll until `streak` answers in a row come from version `want`.
        Returns (seconds from the action to the first answer of that run, failed answers,
        answers seen)."""
        t0 = time.perf_counter()
        action()
        run_start: float | None = None
        run = failed = seen = 0
        while time.perf_counter() - t0 < 60:
            status, version = self.once()
            now = time.perf_counter() - t0
            seen += 1
            if status != 200:
                failed += 1
            if version == want:
                if run == 0:
                    run_start = now
                run += 1
                if run >= streak and run_start is not None:
                    return run_start, failed, seen
            else:
                run = 0
            time.sleep(POLL)
        raise TimeoutError(f"answers never settled on version {want}")


def one_round(workdir: Path, streak: int) -> dict[str, Any]:
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    import konan

    data_dir = workdir / "data"
    port = free_port()
    proc, up_s = start_konan_up(data_dir, port)
    out: dict[str, Any] = {"up": up_s}
    try:
        url = f"http://127.0.0.1:{port}"
        client = konan.Client(url)
        client.login("admin", PASSWORD)
        X, y = make_classification(n_samples=2000, n_features=20, random_state=42)
        frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(20)])
        reference = frame.assign(y=y)
        v1_model = LogisticRegression(C=1.0, max_iter=1000).fit(X, y)
        v2_model = LogisticRegression(C=0.01, max_iter=1000).fit(X, y)

        t0 = time.perf_counter()
        v1 = client.register_model(v1_model, name="bench-lr", reference_data=reference, target="y")
        out["register"] = time.perf_counter() - t0
        key = client.create_api_key("bench", project="default")["key"]
        row = {f"f{i}": float(v) for i, v in enumerate(X[0])}
        poller = Poller(url, "bench-live", key, row)

        t0 = time.perf_counter()
        client.deploy("bench-live", model="bench-lr", version=v1["version"], wait=None)
        poller.until(lambda status, _v: status == 200)
        out["deploy"] = time.perf_counter() - t0
        first_revision = client.get_deployment("bench-live")["revision"]

        v2 = client.register_model(v2_model, name="bench-lr", reference_data=reference, target="y")
        t0 = time.perf_counter()
        client.set_traffic(
            "bench-live", champion=v1["version"], canary=v2["version"], canary_weight=0.5
        )
        poller.until(lambda _s, version: version == v2["version"])
        out["canary"] = time.perf_counter() - t0

        out["promote"], out["promote_failed"], out["promote_answers"] = poller.switch(
            lambda: client.promote("bench-live", reason="bench"), v2["version"], streak
        )
        out["rollback"], out["rollback_failed"], out["rollback_answers"] = poller.switch(
            lambda: client.rollback("bench-live", revision=first_revision, reason="bench"),
            v1["version"],
            streak,
        )
        client.close()
    finally:
        stop_konan_up(proc)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--streak", type=int, default=20, help="answers in a row that count as 100 %%"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs")
    args = parser.parse_args()
    info = machine()
    rounds: list[dict[str, Any]] = []
    for rnd in range(1, args.rounds + 1):
        workdir = Path(tempfile.mkdtemp(prefix="konan-bench-lifecycle-"))
        try:
            result = one_round(workdir, args.streak)
        finally:
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
        result["round"] = rnd
        rounds.append(result)
        print(
            f"round {rnd}: "
            + ", ".join(f"{s} {result[s]:.2f} s" for s in STEPS)
            + f"; failed predictions during promote {result['promote_failed']}"
            + f"/{result['promote_answers']}, rollback {result['rollback_failed']}"
            + f"/{result['rollback_answers']}",
            flush=True,
        )
    summary = {s: median([r[s] for r in rounds]) for s in STEPS}
    summary["failed_predictions"] = sum(r["promote_failed"] + r["rollback_failed"] for r in rounds)

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"Lifecycle: medians of {args.rounds} rounds — {info['cpus']} CPUs, {info['date']}"
    )
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("rounds", justify="right")
    for s in STEPS:
        table.add_row(s, f"{summary[s]:.2f}", "  ".join(f"{r[s]:.2f}" for r in rounds))
    table.add_row("failed predictions (promote + rollback)", str(summary["failed_predictions"]), "")
    Console(width=120).print(table)
    path = write_results(
        "lifecycle",
        {
            "benchmark": "lifecycle",
            "machine": info,
            "config": vars(args),
            "summary": summary,
            "rounds": rounds,
        },
    )
    print(f"\nJSON: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
