"""Custom Python models: a zip with ``konan-model.json`` and the model's source.

The bundle is checked and extracted into a fresh private directory, and the entrypoint module
is imported as part of a package with a unique name whose ``__path__`` is that directory: two
versions of the same bundle can live in one process, and sys.path is left alone. Modules of the
bundle import each other relatively (``from . import helpers``).

The class is built with ``ClassName.load(model_dir)`` when it has one, else ``ClassName()``.
It must have ``predict(frame)``; ``predict_proba``, ``classes_`` and ``feature_names`` are
optional. It receives a pandas DataFrame with the signature's columns.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys
import uuid
import weakref
from pathlib import Path

from konan.core.errors import InvalidInput
from konan.serving.flavors.archive import ArchiveLimits, extract_zip, open_zip, private_dir
from konan.serving.flavors.estimator import EstimatorModel
from konan.serving.flavors.manifest import Manifest, read_manifest


def _import(root: Path, manifest: Manifest) -> object:
    package = f"konan_model_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_loader(package, loader=None, is_package=True)
    assert spec is not None
    spec.submodule_search_locations = [str(root)]
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    try:
        entry = importlib.import_module(f"{package}.{manifest.module}")
    except BaseException:
        for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
            del sys.modules[name]
        raise
    try:
        return getattr(entry, manifest.class_name)
    except AttributeError:
        raise InvalidInput(
            f"the module {manifest.module!r} has no class {manifest.class_name!r}"
        ) from None


def load_python(
    path: Path, *, workdir: Path | None = None, limits: ArchiveLimits = ArchiveLimits()
) -> EstimatorModel:
    with open_zip(path, limits) as zf:
        manifest = read_manifest(zf)
        root = private_dir(workdir, prefix="konan-model-")
        try:
            extract_zip(zf, root, limits)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
    try:
        cls = _import(root, manifest)
        loader = getattr(cls, "load", None)
        instance = loader(root) if callable(loader) else cls()  # type: ignore[operator]
        model = EstimatorModel(instance, flavor="python", frame_input=True)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    # The model may read its files lazily; the directory lives as long as the model does.
    weakref.finalize(model, shutil.rmtree, root, ignore_errors=True)
    return model
