"""The validation sandbox's child: ``python -m konan.registry.sandbox_worker request.json``.

Started by konan.registry.sandbox in a private directory with a minimal environment. It lowers
its own resource limits before importing anything that touches the model, loads the artifact
with the data plane's loaders, predicts on the reference sample and writes ``result.json`` in
its directory (stdout is discarded, so a model that prints cannot forge the answer).

``--fence`` (first, while still privileged inside fresh namespaces): make every filesystem
read-only except the private directory, cover the paths to hide with empty read-only mounts,
then exec the privilege-dropping wrapper (``exec_prefix`` in the request), which runs this
module again without ``--fence``. Nothing of the model is touched before that.

When it finds itself as PID 1 of a fresh PID namespace it forks first and stays as a minimal
init: the real work runs as PID 2 with ordinary signal semantics, and the init turns its exit
status (including "killed by signal N" as 128+N) into its own.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

WORKER = "konan.registry.sandbox_worker"
RESULT = "result.json"
PHASE = "phase"
COMPILED = "compiled.onnx"
PREVIEW_ROWS = 5
MAX_PROFILE_ROWS = 500
COMPILE_FLAVORS = ("sklearn", "pickle", "joblib")
# The validation result, written before the compile step starts: if compiling runs out of
# CPU time (or is killed), the model still validated and registration goes on without it.
_validated: dict[str, Any] | None = None
_MAX_MESSAGE = 500
MB = 1024 * 1024


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    fence = args[0] == "--fence"
    request_file = args[-1]
    request: dict[str, Any] = json.loads(Path(request_file).read_text())
    if fence:
        _fence(Path.cwd(), request.get("hide_paths", []))
        prefix = [*request.get("exec_prefix", []), sys.executable, "-m", WORKER]
        os.execv(prefix[0], [*prefix, request_file])  # noqa: S606 - argv from our own request
    if request.get("probe"):
        return _probe(request)
    if os.getpid() == 1:
        child = os.fork()
        if child:
            return _init(child)
    _apply_limits(request["limits"])
    signal.signal(signal.SIGXCPU, _on_cpu_limit)
    kept: dict[str, Any] = {}
    result = _validate(request, kept)
    _write(result)
    if result.get("ok") and request.get("compile") is not None:
        global _validated
        _validated = result
        result["report"]["compiled"] = _compile(request, kept)
        _write(result)
    return 0


def _probe(request: dict[str, Any]) -> int:
    """Exit 0 when this chain runs the same Python as the parent, with a writable directory.

    (An interpreter the sandbox user cannot read may still start, by falling back to another
    installation's standard library: that must not pass.)"""
    Path(PHASE).write_text("probe")
    return 0 if str(Path(json.__file__).parent) == request.get("stdlib") else 3


# ---- the filesystem fence --------------------------------------------------------------------

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
_MS_REMOUNT, _MS_BIND = 0x20, 0x1000
_KEPT_FLAGS = {
    "nosuid": _MS_NOSUID,
    "nodev": _MS_NODEV,
    "noexec": _MS_NOEXEC,
    "noatime": 0x400,
    "nodiratime": 0x800,
    "relatime": 0x200000,
}
_OCTAL = re.compile(r"\\([0-7]{3})")
_LEFT_WRITABLE = ("/proc", "/dev", "/sys")  # kernel filesystems; /dev/shm is plain tmpfs


def _bytes(value: str | None) -> bytes | None:
    return value.encode() if value is not None else None


def _mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    args = (_bytes(source), _bytes(target), _bytes(fstype), ctypes.c_ulong(flags), _bytes(data))
    if libc.mount(*args):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)


def _mount_points() -> list[tuple[str, set[str]]]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        target = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[4])  # \040 is a space
        found.append((target, set(fields[5].split(","))))
    return found


def _fence(box: Path, hide: list[str]) -> None:
    """Read-only everything but the box (this runs in the sandbox's own mount namespace)."""
    _mount(str(box), str(box), None, _MS_BIND)
    for path in map(Path, hide):
        if path.is_dir():
            _mount(
                "tmpfs",
                str(path),
                "tmpfs",
                _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                "size=4k,mode=000",
            )
        elif path.exists():
            _mount("/dev/null", str(path), None, _MS_BIND)
    for target, options in _mount_points():
        kernel = any(target == p or target.startswith(p + "/") for p in _LEFT_WRITABLE)
        if target == str(box) or "ro" in options or kernel:
            continue
        flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY
        for option in options:
            flags |= _KEPT_FLAGS.get(option, 0)
        _mount(None, target, None, flags)
    os.chdir(box)  # the old cwd points below the bind mount, into the now read-only parent


def _init(child: int) -> int:
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == child:
            if os.WIFSIGNALED(status):
                return 128 + os.WTERMSIG(status)
            return os.waitstatus_to_exitcode(status)


def _apply_limits(limits: dict[str, int]) -> None:
    wanted = {
        resource.RLIMIT_AS: (limits["memory_mb"] * MB,) * 2,
        resource.RLIMIT_CPU: (limits["cpu_seconds"], limits["cpu_seconds"] + 2),
        resource.RLIMIT_NOFILE: (limits["max_open_files"],) * 2,
        resource.RLIMIT_FSIZE: (limits["max_file_mb"] * MB,) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    for which, (soft, hard) in wanted.items():
        _, current = resource.getrlimit(which)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(which, (soft, hard))


def _on_cpu_limit(signum: int, frame: object) -> None:
    if _validated is not None:
        _validated["report"]["compiled"] = {
            "skipped": "compiling used up the sandbox's CPU time limit"
        }
        Path(COMPILED).unlink(missing_ok=True)
        _write(_validated)
        os._exit(0)
    _write(_error("cpu_limit", "the model used up its CPU time limit"))
    os._exit(3)


def _phase(name: str) -> None:
    Path(PHASE).write_text(name)


def _write(result: dict[str, Any]) -> None:
    tmp = Path(RESULT + ".tmp")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, RESULT)


def _error(reason: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"ok": False, "reason": reason, "message": message[:2000], "extra": extra}


def _scrub(text: str) -> str:
    """Drop this machine's paths from a message (exception texts often quote them)."""
    import konan

    prefixes = {
        str(Path.cwd()): "<sandbox>",
        str(Path(konan.__file__).resolve().parent.parent): "<konan>",
        sys.prefix: "<python>",
        sys.base_prefix: "<python>",
        sys.exec_prefix: "<python>",
    }
    for prefix in sorted(prefixes, key=len, reverse=True):
        if len(prefix) > 1:
            text = text.replace(prefix, prefixes[prefix])
    return text


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {_scrub(str(exc))}"
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _validate(request: dict[str, Any], kept: dict[str, Any]) -> dict[str, Any]:
    """Load and predict; `kept` receives the model, the sample and its outputs (for compile)."""
    from konan.core.errors import InvalidInput

    memory = f"(limit {request['limits']['memory_mb']} MB)"
    _phase("load")
    started = time.monotonic()
    try:
        from konan.serving.flavors import load_model

        model = load_model(
            Path(request["artifact"]),
            request["flavor"],
            trusted_types=request["trusted_types"],
            allow_pickle=request["allow_pickle"],
            workdir=Path.cwd(),
            onnx_threads=request["onnx_threads"],
        )
    except InvalidInput as exc:
        reason = str(exc.extra.get("reason", "invalid_artifact"))
        extra = {k: v for k, v in exc.extra.items() if k != "reason"}
        return _error(reason, _scrub(exc.detail), **extra)
    except MemoryError:
        return _error("memory", f"the model ran out of memory while loading {memory}")
    except BaseException as exc:  # anything the model's own code raises, SystemExit included
        return _error("load_error", f"could not load the model: {_describe(exc)}")
    load_seconds = time.monotonic() - started

    names: list[str] | None = request["feature_names"]
    problem = _feature_problem(model, names)
    if problem is not None:
        return _error("feature_mismatch", problem)

    report: dict[str, Any] = {
        "flavor": model.flavor,
        "feature_names": model.feature_names,
        "n_features": model.n_features,
        "classes": model.classes,
        "has_proba": model.has_proba,
        "untrusted_types": list(model.untrusted_types),
        "load_seconds": load_seconds,
        "predict_seconds": 0.0,
        "sample_rows": 0,
        "predictions": [],
        "probabilities": None,
    }
    predictions = None
    if request["sample"] is not None:
        _phase("sample")
        try:
            columns, rows = _read_sample(
                Path(request["sample"]), names or model.feature_names, request["max_sample_rows"]
            )
        except InvalidInput as exc:
            return _error("sample_error", exc.detail)
        except MemoryError:
            return _error("memory", f"reading the reference data ran out of memory {memory}")
        except Exception as exc:
            return _error("sample_error", f"could not read the reference data: {_describe(exc)}")
        _phase("predict")
        started = time.monotonic()
        try:
            predictions, probabilities = model.predict_with_proba(columns)
        except InvalidInput as exc:
            return _error("predict_error", f"prediction on the reference data failed: {exc.detail}")
        except MemoryError:
            return _error("memory", f"the model ran out of memory while predicting {memory}")
        except BaseException as exc:
            return _error(
                "predict_error",
                f"prediction on {rows} rows of the reference data failed: {_describe(exc)}"
                + _hint(exc, model.feature_names, list(columns)),
            )
        report["predict_seconds"] = time.monotonic() - started
        problem = _output_problem(predictions, probabilities, rows, model.classes)
        if problem is not None:
            return _error("predict_error", problem)
        report["sample_rows"] = rows
        report["predictions"] = predictions[:PREVIEW_ROWS].tolist()
        # every prediction, for the version's prediction profile (binned by the control plane)
        report["sample_predictions"] = predictions[:MAX_PROFILE_ROWS].tolist()
        if probabilities is not None:
            report["probabilities"] = probabilities[:PREVIEW_ROWS].tolist()
        kept.update(columns=columns, predictions=predictions, probabilities=probabilities)
    kept["model"] = model
    report.update(_output(model.classes, model.has_proba, predictions))
    return {"ok": True, "report": report}


def _feature_problem(model: Any, names: list[str] | None) -> str | None:
    if names is None:
        return None
    if model.feature_names is not None:
        missing = [n for n in model.feature_names if n not in names]
        if missing:
            return (
                "the model needs columns that the signature or reference data lacks: "
                f"{', '.join(missing[:50])} (the model's columns: "
                f"{', '.join(model.feature_names[:50])})"
            )
    elif model.n_features is not None and model.n_features != len(names):
        return (
            f"the model expects {model.n_features} features but {len(names)} columns were given "
            f"({', '.join(names[:50])}); drop the extra columns or send a signature"
        )
    return None


def _read_sample(path: Path, names: list[str] | None, max_rows: int) -> tuple[dict[str, Any], int]:
    import pyarrow.parquet as pq

    from konan.core.errors import InvalidInput

    with pq.ParquetFile(path) as parquet:
        present = parquet.schema_arrow.names
        wanted = names if names is not None else present
        missing = [n for n in wanted if n not in present]
        if missing:
            raise InvalidInput(f"the reference data lacks columns: {', '.join(missing[:50])}")
        batch = next(parquet.iter_batches(batch_size=max_rows, columns=wanted), None)
    if batch is None or batch.num_rows == 0:
        raise InvalidInput("the reference data has no rows")
    frame = batch.to_pandas()
    return {n: frame[n].to_numpy() for n in wanted}, batch.num_rows


def _hint(exc: BaseException, model_names: list[str] | None, given: list[str]) -> str:
    text = str(exc).lower()
    if isinstance(exc, KeyError) or "column" in text or "feature" in text:
        expected = ", ".join(model_names[:50]) if model_names else "unknown"
        return (
            f". The columns given were {', '.join(given[:50])}; the model declares {expected}. "
            "Check that the reference data holds the columns the model was trained on"
        )
    if isinstance(exc, ValueError | TypeError) and ("convert" in text or "dtype" in text):
        return ". A column probably has the wrong type (text where the model expects numbers?)"
    return ""


def _output_problem(predictions: Any, probabilities: Any, rows: int, classes: Any) -> str | None:
    if predictions.ndim != 1 or len(predictions) != rows:
        return (
            f"the model returned predictions of shape {list(predictions.shape)} for {rows} rows; "
            "Konan serves one prediction per row"
        )
    if probabilities is not None:
        width = len(classes) if classes is not None else None
        if (
            probabilities.ndim != 2
            or len(probabilities) != rows
            or (width is not None and probabilities.shape[1] != width)
        ):
            return f"predict_proba returned shape {list(probabilities.shape)} for {rows} rows" + (
                f" and {width} classes" if width is not None else ""
            )
    return None


def _value_type(values: Any) -> str:
    import numpy as np

    array = np.asarray(values)
    kind = array.dtype.kind
    if kind == "b":
        return "boolean"
    if kind in "iu":
        return "integer"
    if kind == "f":
        return "float"
    items = [v for v in array.tolist() if v is not None]
    if items and all(isinstance(v, bool) for v in items):
        return "boolean"
    if items and all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return "integer"
    if items and all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
        return "float"
    return "string"


def _output(classes: Any, has_proba: bool, predictions: Any) -> dict[str, Any]:
    """The output kind and type, for OutputSpec."""
    if classes is not None:
        return {"output_kind": "label", "output_type": _value_type(classes)}
    kind = _value_type(predictions) if predictions is not None else "float"
    if has_proba or kind in ("string", "boolean"):
        return {"output_kind": "label", "output_type": kind}
    return {"output_kind": "value", "output_type": kind}


# ---- compile: scikit-learn -> ONNX, kept only when it answers like the original --------------


def _compile(request: dict[str, Any], kept: dict[str, Any]) -> dict[str, Any] | None:
    """The compile outcome: ``{"flavor": "onnx", "file", "sha256", …}`` or ``{"skipped": why}``;
    None when the flavor is not one Konan compiles (ONNX already, custom Python)."""
    model = kept.get("model")
    if model is None or model.flavor not in COMPILE_FLAVORS:
        return None
    _phase("compile")
    try:
        return _try_compile(request["compile"], model, kept, request["onnx_threads"])
    except MemoryError:
        reason = f"compiling ran out of memory (limit {request['limits']['memory_mb']} MB)"
    except BaseException as exc:  # skl2onnx or the model's own code; never fails validation
        reason = f"compiling failed: {_describe(exc)}"
    Path(COMPILED).unlink(missing_ok=True)
    return {"skipped": reason}


def _try_compile(
    options: dict[str, float], model: Any, kept: dict[str, Any], threads: int
) -> dict[str, Any]:
    import hashlib

    from sklearn.base import BaseEstimator

    estimator = getattr(model, "model", None)
    if not isinstance(estimator, BaseEstimator):
        kind = type(estimator)
        return {
            "skipped": f"the model is a {kind.__module__}.{kind.__qualname__}, not a "
            "scikit-learn estimator that skl2onnx can convert"
        }
    if "columns" not in kept:
        return {
            "skipped": "no reference data to check the compiled model against; register the "
            "version with reference_data to have it compiled"
        }
    columns: dict[str, Any] = kept["columns"]
    data = _convert(estimator, model, columns)
    if isinstance(data, str):
        return {"skipped": data}
    Path(COMPILED).write_bytes(data)
    from konan.serving.flavors.onnx import load_onnx

    compiled = load_onnx(Path(COMPILED), threads=threads)
    problem, max_diff = _compare(model, compiled, columns, kept, options)
    if problem is not None:
        Path(COMPILED).unlink(missing_ok=True)
        return {"skipped": problem}
    return {
        "flavor": "onnx",
        "file": COMPILED,
        "sha256": hashlib.sha256(data).hexdigest(),
        "rows": len(kept["predictions"]),
        "max_abs_diff": max_diff,
        "atol": options["atol"],
        "rtol": options["rtol"],
    }


def _convert(estimator: Any, model: Any, columns: dict[str, Any]) -> bytes | str:
    """ONNX bytes taking the columns the model server hands over, or why there are none.

    All-numeric inputs: one float tensor in the column order the server passes (named by
    ``konan.feature_names`` in the metadata when the model knows its columns, so the loader
    picks them by name), else one [N, 1] input per column (strings as string tensors), the
    layout a ColumnTransformer selecting columns by name needs."""
    import json as _json

    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.base import is_classifier

    from konan.serving.flavors.columns import as_array, is_numeric

    names = list(model.feature_names or columns)
    arrays = {n: as_array(columns[n]) for n in names}
    numeric = {n: is_numeric(a) for n, a in arrays.items()}
    layouts: list[list[tuple[str, Any]]] = []
    if all(numeric.values()):
        layouts.append([("input", FloatTensorType([None, len(names)]))])
    layouts.append(
        [
            (n, FloatTensorType([None, 1]) if numeric[n] else StringTensorType([None, 1]))
            for n in names
        ]
    )
    options = {id(estimator): {"zipmap": False}} if is_classifier(estimator) else None
    failures = []
    for layout in layouts:
        try:
            onx = convert_sklearn(estimator, initial_types=layout, options=options)
        except Exception as exc:
            failures.append(_describe(exc))
            continue
        # skl2onnx names the graph with a fresh uuid; a fixed name makes the bytes (and so the
        # content address) the same each time the same model is registered.
        onx.graph.name = "konan_compiled"
        if len(layout) == 1 and model.feature_names:
            entry = onx.metadata_props.add()
            entry.key, entry.value = "konan.feature_names", _json.dumps(names)
        return bytes(onx.SerializeToString())
    return "skl2onnx cannot convert this model: " + failures[-1]


def _compare(
    model: Any,
    compiled: Any,
    columns: dict[str, Any],
    kept: dict[str, Any],
    options: dict[str, float],
) -> tuple[str | None, float]:
    """Why the compiled model does not answer like the original on the sample (None: it does)."""
    import numpy as np

    atol, rtol = options["atol"], options["rtol"]
    if compiled.has_proba != model.has_proba:
        return "the compiled model does not give the same outputs (probabilities)", 0.0
    if _typed_list(compiled.classes) != _typed_list(model.classes):
        return (
            f"the compiled model's classes {compiled.classes!r:.200} differ from the "
            f"original's {model.classes!r:.200}",
            0.0,
        )
    labels, proba = compiled.predict_with_proba(columns)
    original = kept["predictions"]
    rows = len(original)
    if len(labels) != rows:
        return f"the compiled model gave {len(labels)} predictions for {rows} rows", 0.0
    max_diff = 0.0
    if model.classes is None and original.dtype.kind == "f":
        values = np.asarray(labels, dtype=np.float64)
        diff = np.abs(values - original)
        max_diff = float(np.nanmax(diff)) if rows else 0.0
        bad = int((diff > atol + rtol * np.abs(original)).sum())
        if bad or not np.array_equal(np.isnan(values), np.isnan(original)):
            return (
                f"the compiled model's predictions differ from the original's beyond "
                f"atol {atol:g} + rtol {rtol:g} on {bad} of {rows} rows "
                f"(largest difference {max_diff:.3g})",
                max_diff,
            )
    else:
        ours, theirs = _typed_list(labels) or [], _typed_list(original) or []
        bad = sum(a != b for a, b in zip(ours, theirs, strict=True))
        if bad:
            return (
                f"the compiled model's labels differ from the original's on {bad} of {rows} rows",
                0.0,
            )
    expected = kept["probabilities"]
    if expected is not None:
        got = np.asarray(proba, dtype=np.float64)
        if got.shape != expected.shape:
            return f"the compiled model's probabilities have shape {list(got.shape)}", 0.0
        diff = np.abs(got - expected)
        max_diff = max(max_diff, float(diff.max()) if diff.size else 0.0)
        if max_diff > atol:
            return (
                f"the compiled model's probabilities differ from the original's by up to "
                f"{max_diff:.3g} (tolerance {atol:g}) on {int((diff > atol).any(axis=1).sum())} "
                f"of {rows} rows",
                max_diff,
            )
    return None, max_diff


def _typed_list(values: Any) -> list[tuple[str, Any]] | None:
    """Values with their JSON type, so 1, 1.0 and True never compare equal."""
    if values is None:
        return None
    items = values.tolist() if hasattr(values, "tolist") else list(values)
    return [(type(v).__name__, v) for v in items]


if __name__ == "__main__":
    sys.exit(main())
