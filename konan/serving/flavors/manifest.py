"""The manifest of a custom Python model bundle: ``konan-model.json`` at the zip's root.

    {"entrypoint": "package.module:ClassName", "files": ["package/module.py", "weights.npy"]}

``files`` is optional; when present it lists the bundle exactly (every listed file must be in
the zip, and the zip may hold nothing else). Standard library only: the control plane reads
it to recognise the flavor, the loader to import the entrypoint.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass

from konan.core.errors import InvalidInput
from konan.serving.flavors.archive import entry_parts, read_member

MANIFEST = "konan-model.json"
_MAX_MANIFEST_BYTES = 1024 * 1024
_ENTRYPOINT = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)$")


@dataclass(frozen=True)
class Manifest:
    module: str
    class_name: str
    files: tuple[str, ...] | None

    @property
    def module_files(self) -> tuple[str, str]:
        """Where the entrypoint module may live: a module file or a package's __init__."""
        base = self.module.replace(".", "/")
        return f"{base}.py", f"{base}/__init__.py"


def read_manifest(zf: zipfile.ZipFile) -> Manifest:
    """Parse and check the manifest against the zip's entries (already checked by open_zip)."""
    raw = read_member(zf, MANIFEST, _MAX_MANIFEST_BYTES)
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{MANIFEST} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{MANIFEST} must be a JSON object")
    entrypoint = data.get("entrypoint")
    match = _ENTRYPOINT.match(entrypoint) if isinstance(entrypoint, str) else None
    if match is None:
        raise InvalidInput(
            f'{MANIFEST} needs "entrypoint": "module:ClassName" (a dotted module path in the '
            "bundle and a class name)"
        )
    present = {"/".join(entry_parts(i.filename)) for i in zf.infolist() if not i.is_dir()}
    files = _files(data.get("files"), present)
    manifest = Manifest(module=match.group(1), class_name=match.group(2), files=files)
    if not any(name in present for name in manifest.module_files):
        raise InvalidInput(
            f"the entrypoint module {manifest.module!r} is not in the bundle "
            f"(expected {manifest.module_files[0]})"
        )
    return manifest


def _files(value: object, present: set[str]) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f'"files" in {MANIFEST} must be a list of paths inside the bundle')
    files = []
    for name in value:
        try:
            files.append("/".join(entry_parts(name)))
        except InvalidInput:
            raise InvalidInput(
                f"{MANIFEST} names {name[:200]!r}, a path outside the bundle"
            ) from None
    missing = [f for f in files if f not in present]
    if missing:
        raise InvalidInput(
            f"files listed in {MANIFEST} are not in the bundle: {', '.join(missing)}"
        )
    unlisted = sorted(present - set(files) - {MANIFEST})
    if unlisted:
        raise InvalidInput(
            f"the bundle holds files that {MANIFEST} does not list: {', '.join(unlisted[:20])}"
        )
    return tuple(files)
