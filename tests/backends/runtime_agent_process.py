"""The local agent as its own process, the way `konan agent` runs it, for restart tests.

    python runtime_agent_process.py ROOT HOST TUNING_JSON COMMAND_JSON

SIGTERM/SIGINT stop it gracefully (every replica gets SIGTERM); SIGKILL simulates a crash.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path

from konan.backends.runtimes.agent import Agent, AgentTuning


def main() -> None:
    root, host, tuning, command = sys.argv[1:5]
    logging.basicConfig(level=logging.INFO, format="agent %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    agent = Agent(
        Path(root),
        host,
        server_command=json.loads(command),
        tuning=AgentTuning(**json.loads(tuning)),
    )
    agent.run(stop)


if __name__ == "__main__":
    main()
