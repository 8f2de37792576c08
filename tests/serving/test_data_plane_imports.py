"""The data plane stays lean: the model server imports no database, broker, web framework or
control-plane code (STYLE pattern 9). Checked in a fresh interpreter, where nothing else has
imported them first."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = (
    "sqlalchemy",
    "celery",
    "fastapi",
    "konan.db",
    "konan.server",
    "konan.registry.service",
    "konan.registry.api",
    "konan.deployments",
    "konan.governance",
)

PROBE = """
import json, sys
import konan.serving.server
import konan.serving.__main__
print(json.dumps(sorted(sys.modules)))
"""


def test_model_server_imports_no_control_plane_module() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    offending = [
        name
        for name in loaded
        for prefix in FORBIDDEN
        if name == prefix or name.startswith(prefix + ".")
    ]
    assert offending == []
    # And it really is the model server that was imported.
    assert "konan.serving.server" in loaded
    assert "uvicorn" in loaded
