"""Print the OpenAPI document (for the dashboard's generated TypeScript types).

python -m konan.server.openapi > frontend/openapi.json
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from konan.core.settings import Settings
from konan.server.app import create_app


def openapi_document() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(data_dir=Path(tmp)), check_schema=False)
        doc = app.openapi()
        app.state.konan.engine.dispose()
        return doc


if __name__ == "__main__":
    json.dump(openapi_document(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
