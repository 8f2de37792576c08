"""The peers' own virtualenvs under bench/.venvs/<name>, created on first use from
bench/peers/requirements-<name>.txt (pinned). Benchmark-only: nothing here is a dependency of
Konan. A venv is rebuilt when its requirements file changes (its sha256 is kept in the venv)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from lib.common import BENCH

VENVS = BENCH / ".venvs"


class PeerUnavailable(RuntimeError):
    """A peer could not be installed or started here; the message (why) goes in the table."""


def requirements(name: str) -> Path:
    return BENCH / "peers" / f"requirements-{name}.txt"


def ensure_venv(name: str, *, quiet: bool = False) -> Path:
    """The python of bench/.venvs/<name>, creating the venv and installing its pins if needed."""
    req = requirements(name)
    digest = hashlib.sha256(req.read_bytes()).hexdigest()
    home = VENVS / name
    python = home / "bin" / "python"
    stamp = home / "bench-requirements.sha256"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    if home.exists():
        shutil.rmtree(home)
    VENVS.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"creating {home.relative_to(BENCH.parent)} from {req.name} (once; a few minutes)")
    # The interpreter that runs the bench, without its packages: `python -m venv` from inside a
    # venv builds on the base interpreter.
    steps = [
        [sys.executable, "-m", "venv", str(home)],
        [str(python), "-m", "pip", "install", "--quiet", "-r", str(req)],
    ]
    log = VENVS / f"{name}-install.log"
    with log.open("wb") as out:
        for cmd in steps:
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
            if done.returncode != 0:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise PeerUnavailable(
                    f"could not install {req.name} (exit {done.returncode}): " + " | ".join(tail)
                )
    stamp.write_text(digest + "\n")
    return python
