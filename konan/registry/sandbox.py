"""Validate an uploaded model in a separate, short-lived, fenced process (control plane side).

The control plane never deserialises a model itself. ``validate_model`` copies the artifact
(and the reference sample) into a fresh private directory and runs
``python -m konan.registry.sandbox_worker`` there, which loads the model with the data plane's
loaders, predicts on the sample and writes a JSON result file. Fences, from outermost in:

* environment: only PATH, LANG, HOME/TMPDIR (the private dir), PYTHONPATH (to find konan) and
  single-thread settings for OpenMP/MKL/OpenBLAS. No KONAN_*, AWS_*, database or broker URLs;
* a fresh network namespace (no network at all) and PID namespace with its own /proc (host
  processes, and their environments, are invisible; everything the model starts dies with
  it), via ``unshare`` when this host allows it;
* privileges: as root, the child runs as an unprivileged user when that user can run this
  Python, else as root without any capabilities (so it cannot raise its limits); always
  with no_new_privs;
* resource limits set by the child on itself before it touches the model: address space
  (memory), CPU seconds, open files, file size, no core dumps;
* a wall-clock timeout after which the whole process group is killed.

What applied is probed once per process and reported in ``ValidationReport.isolation``.
Failures become InvalidInput (422) with a reason a person can act on and an ``extra["reason"]``
code: refused flavors or types, load/predict errors, timeout, memory, CPU.

Compile (``compiled_dest``): after the model validated, the worker writes that result, then
converts a scikit-learn model to ONNX with skl2onnx inside the same fences and limits, runs it
with onnxruntime on the same sample and keeps it only when every label is identical and every
probability within ``compile_atol``. The ONNX bytes come back as a file in the private
directory and are copied to ``compiled_dest``. A compile that fails, mismatches, times out or
is killed never fails validation: the report says why in ``compile_skipped``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import konan
from konan.core.errors import InvalidInput
from konan.registry.signature import OutputSpec, ValueType

WORKER = "konan.registry.sandbox_worker"
RESULT, PHASE, STDERR, COMPILED = "result.json", "phase", "stderr.log", "compiled.onnx"
_MAX_RESULT_BYTES = 4 * 1024 * 1024
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
_PHASES = {
    "load": "loading the model",
    "sample": "reading the reference data",
    "predict": "predicting on the reference data",
    "compile": "compiling the model to ONNX",
}
MB = 1024 * 1024


@dataclass(frozen=True)
class SandboxLimits:
    timeout_seconds: float = 120.0
    memory_mb: int = 2048
    cpu_seconds: int = 120
    max_open_files: int = 256
    max_file_mb: int = 2048
    max_sample_rows: int = 500
    onnx_threads: int = 1
    # Compiled outputs must match the original's: labels exactly, probabilities within atol,
    # a regressor's values within atol + rtol * |value|. float32 (what skl2onnx's tree and
    # linear operators compute in) was measured at ≤ 5e-7 off on the test models.
    compile_atol: float = 1e-5
    compile_rtol: float = 1e-5
    isolate_network: bool = True
    # when the control plane runs as root: the uid/gid the child drops to, if it can
    run_as_uid: int = 65534
    run_as_gid: int = 65534
    tmp_dir: Path | None = None  # where private directories are made; not under hide_paths
    # hidden from the child behind empty read-only mounts (data dir, config, artifact root)
    hide_paths: tuple[Path, ...] = ()


OutputKind = Literal["label", "value"]


@dataclass(frozen=True)
class CompiledModel:
    """An ONNX equivalent the sandbox made and checked; its bytes are at `path`."""

    flavor: str
    path: Path
    sha256: str
    size: int
    rows: int
    max_abs_diff: float


@dataclass(frozen=True)
class ValidationReport:
    flavor: str
    feature_names: tuple[str, ...] | None
    n_features: int | None
    classes: tuple[str | int | bool | float, ...] | None
    has_proba: bool
    output_kind: OutputKind
    output_type: ValueType
    sample_rows: int
    predictions: tuple[Any, ...]
    probabilities: tuple[tuple[float, ...], ...] | None
    untrusted_types: tuple[str, ...]
    isolation: tuple[str, ...]
    load_seconds: float
    predict_seconds: float
    wall_seconds: float
    compiled: CompiledModel | None = None
    compile_skipped: str | None = None
    # The original model's prediction on every sample row, for the prediction profile.
    sample_predictions: tuple[Any, ...] | None = None

    def to_output_spec(self) -> OutputSpec:
        return OutputSpec(
            kind=self.output_kind,
            type=self.output_type,
            classes=list(self.classes)
            if self.classes is not None and self.output_kind == "label"
            else None,
            probabilities=self.has_proba,
        )


# ---- isolation: probed once per process ------------------------------------------------------


@dataclass(frozen=True)
class _Isolation:
    outer: tuple[str, ...]  # wrappers the child is started under
    fence: bool  # the worker first runs its --fence stage, then execs `inner`
    inner: tuple[str, ...]  # privilege-dropping wrapper (run after the fence, or after outer)
    labels: tuple[str, ...]
    uid: int | None

    def command(self, request: str, *args: str) -> list[str]:
        worker = [sys.executable, "-m", WORKER]
        if self.fence:
            return [*self.outer, *worker, "--fence", *args, request]
        return [*self.outer, *self.inner, *worker, *args, request]


_probed: dict[SandboxLimits, _Isolation] = {}
_probe_lock = threading.Lock()


def _chain(*commands: Sequence[str]) -> tuple[str, ...]:
    """Wrapper commands in a row, each ending its options with "--"."""
    return tuple(arg for command in commands if command for arg in (*command, "--"))


def _candidates(limits: SandboxLimits) -> list[_Isolation]:
    """From strongest to weakest; the first whose probe works is used."""
    unshare, setpriv = shutil.which("unshare"), shutil.which("setpriv")
    root = os.geteuid() == 0
    ns = ("no-network", "pid-namespace")
    userns = [] if root else ["--user", "--map-root-user"]
    namespaces = [*userns, "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
    drop = [setpriv, "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"] if setpriv else []
    nnp = [setpriv, "--no-new-privs"] if setpriv else []
    caps = ("no-capabilities", "no-new-privs") if drop else ()
    as_user = [
        "--reuid", str(limits.run_as_uid), "--regid", str(limits.run_as_gid), "--clear-groups"
    ]  # fmt: skip
    found = []
    if unshare and limits.isolate_network:
        outer = _chain([unshare, *namespaces])
        if root and drop:
            user = (f"uid-{limits.run_as_uid}",)
            found.append(
                _Isolation(
                    outer,
                    True,
                    _chain([*drop, *as_user]),
                    (*ns, "read-only-fs", *user, *caps),
                    limits.run_as_uid,
                )
            )
        found.append(_Isolation(outer, True, _chain(drop), (*ns, "read-only-fs", *caps), None))
        found.append(_Isolation(outer, False, _chain(drop), (*ns, *caps), None))
    if root:
        found.append(_Isolation((), False, _chain(drop), caps, None))
    found.append(_Isolation((), False, _chain(nnp), ("no-new-privs",) * bool(nnp), None))
    found.append(_Isolation((), False, (), (), None))
    return found


def _isolation(limits: SandboxLimits) -> _Isolation:
    key = replace(limits, timeout_seconds=0, memory_mb=0, cpu_seconds=0, max_sample_rows=0)
    with _probe_lock:
        if key not in _probed:
            _probed[key] = next(c for c in _candidates(limits) if _works(c, limits))
        return _probed[key]


def _works(candidate: _Isolation, limits: SandboxLimits) -> bool:
    """Run the candidate's whole chain once, up to importing the worker."""
    if not candidate.outer and not candidate.inner:
        return True
    box = Path(tempfile.mkdtemp(prefix="konan-probe-", dir=limits.tmp_dir))
    try:
        request = {
            "probe": True,
            "stdlib": str(Path(json.__file__).parent),
            "exec_prefix": candidate.inner,
            "hide_paths": [],
        }
        (box / "request.json").write_text(json.dumps(request))
        _own(box, candidate)
        done = subprocess.run(
            candidate.command("request.json"),
            cwd=box,
            env=_child_env(box),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
        return done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        shutil.rmtree(box, ignore_errors=True)


def _child_env(home: Path) -> dict[str, str]:
    konan_root = str(Path(konan.__file__).resolve().parent.parent)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "HOME": str(home),
        "TMPDIR": str(home),
        "PYTHONPATH": konan_root,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
    }
    env.update(dict.fromkeys(_THREAD_VARS, "1"))
    return env


# ---- one validation --------------------------------------------------------------------------


def validate_model(
    artifact: Path,
    *,
    flavor: str,
    sample: Path | None,
    feature_names: Sequence[str] | None,
    trusted_types: Sequence[str],
    allow_pickle: bool,
    limits: SandboxLimits = SandboxLimits(),
    compiled_dest: Path | None = None,
) -> ValidationReport:
    """Load and try the model in the sandbox; InvalidInput with the reason when it fails.

    With `compiled_dest`, a scikit-learn model is also compiled to ONNX; the bytes land there
    when the compiled model passed (see the report's `compiled` / `compile_skipped`)."""
    started = time.monotonic()
    isolation = _isolation(limits)
    box = Path(tempfile.mkdtemp(prefix="konan-sandbox-", dir=limits.tmp_dir))
    try:
        _prepare(box, artifact, sample)
        request = {
            "exec_prefix": isolation.inner,
            "hide_paths": [str(p) for p in limits.hide_paths],
            "artifact": str(box / "artifact"),
            "flavor": flavor,
            "sample": str(box / "sample.parquet") if sample is not None else None,
            "feature_names": list(feature_names) if feature_names is not None else None,
            "trusted_types": list(trusted_types),
            "allow_pickle": allow_pickle,
            "onnx_threads": limits.onnx_threads,
            "max_sample_rows": limits.max_sample_rows,
            "compile": (
                {"atol": limits.compile_atol, "rtol": limits.compile_rtol}
                if compiled_dest is not None
                else None
            ),
            "limits": {
                "memory_mb": limits.memory_mb,
                "cpu_seconds": limits.cpu_seconds,
                "max_open_files": limits.max_open_files,
                "max_file_mb": limits.max_file_mb,
            },
        }
        (box / "request.json").write_text(json.dumps(request))
        _own(box, isolation)
        returncode, timed_out = _run(box, isolation, limits)
        result = _read_result(box)
        wall = time.monotonic() - started
        compiling = _read_phase(box) == "compile" and bool(result and result.get("ok"))
        if timed_out and not compiling:
            raise InvalidInput(
                f"validation timed out after {limits.timeout_seconds:g} s while "
                f"{_PHASES.get(_read_phase(box), 'starting')}; the model must load and predict "
                f"on {limits.max_sample_rows} rows within that time",
                extra={"reason": "timeout"},
            )
        if result is None:
            raise InvalidInput(_no_result(box, returncode, limits), extra={"reason": "crashed"})
        if not result.get("ok"):
            raise InvalidInput(
                str(result.get("message", "validation failed"))[:2000],
                extra={**_lists(result.get("extra")), "reason": str(result.get("reason"))[:40]},
            )
        report = _report(result.get("report"), isolation, wall)
        if compiled_dest is None:
            return report
        return _compiled(
            box, report, result["report"], compiled_dest, timed_out, returncode, limits
        )
    finally:
        shutil.rmtree(box, ignore_errors=True)


def _compiled(
    box: Path,
    report: ValidationReport,
    data: dict[str, Any],
    dest: Path,
    timed_out: bool,
    returncode: int | None,
    limits: SandboxLimits,
) -> ValidationReport:
    """The report with the compile outcome; the checked ONNX bytes copied to `dest`."""
    outcome = data.get("compiled")
    if outcome is None and report.flavor not in ("sklearn", "pickle", "joblib"):
        return report  # not a flavor Konan compiles
    if timed_out:
        why = f"compiling did not finish within the sandbox's {limits.timeout_seconds:g} s"
        return replace(report, compile_skipped=why)
    if not isinstance(outcome, dict):  # the worker died after validating: killed by a limit
        return replace(
            report,
            compile_skipped=(
                f"the compile step was stopped (exit {returncode}): most likely the memory "
                f"({limits.memory_mb} MB) or CPU ({limits.cpu_seconds} s) limit"
            ),
        )
    if "skipped" in outcome or outcome.get("flavor") != "onnx":
        return replace(report, compile_skipped=str(outcome.get("skipped", "not compiled"))[:1000])
    raw = _read_child_file(box / COMPILED, limits.max_file_mb * MB)
    if raw is None:
        return replace(report, compile_skipped="the compiled model could not be read back")
    sha256 = hashlib.sha256(raw).hexdigest()
    if sha256 != outcome.get("sha256"):
        return replace(report, compile_skipped="the compiled model changed after it was checked")
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(raw)
    try:
        compiled = CompiledModel(
            flavor="onnx",
            path=dest,
            sha256=sha256,
            size=len(raw),
            rows=int(outcome["rows"]),
            max_abs_diff=float(outcome["max_abs_diff"]),
        )
    except (KeyError, TypeError, ValueError):
        dest.unlink(missing_ok=True)
        return replace(report, compile_skipped="the sandbox returned a malformed compile result")
    return replace(report, compiled=compiled)


def _prepare(box: Path, artifact: Path, sample: Path | None) -> None:
    shutil.copyfile(artifact, box / "artifact")
    if sample is not None:
        shutil.copyfile(sample, box / "sample.parquet")


def _own(box: Path, isolation: _Isolation) -> None:
    """Hand the directory to the unprivileged user the child runs as."""
    if isolation.uid is None:
        return
    for path in (box, *box.iterdir()):
        os.chown(path, isolation.uid, -1)


def _run(box: Path, isolation: _Isolation, limits: SandboxLimits) -> tuple[int | None, bool]:
    command = isolation.command("request.json")
    with (box / STDERR).open("wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=box,
            env=_child_env(box),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
            close_fds=True,
        )
    try:
        exited = _wait_unreaped(process, limits.timeout_seconds)
    finally:
        # The child is not reaped yet, so its pid (the group id) cannot have been reused:
        # killing the group hits only what this call started.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        returncode = process.wait()
    return (returncode, False) if exited else (None, True)


def _wait_unreaped(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait for the child to exit without reaping it; False on timeout."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # no pidfd here: reaping early is the lesser evil
        try:
            process.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout * 1000))))
    finally:
        os.close(pidfd)


def _read_child_file(path: Path, max_bytes: int, *, tail: bool = False) -> bytes | None:
    """Read a file the child could have tampered with: no links, no FIFOs, bounded size."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        if info.st_size > max_bytes:
            if not tail:
                return None
            fh.seek(info.st_size - max_bytes)
        return fh.read(max_bytes)


def _read_result(box: Path) -> dict[str, Any] | None:
    raw = _read_child_file(box / RESULT, _MAX_RESULT_BYTES)
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _read_phase(box: Path) -> str:
    raw = _read_child_file(box / PHASE, 64)
    return raw.decode(errors="replace") if raw is not None else ""


def _no_result(box: Path, returncode: int | None, limits: SandboxLimits) -> str:
    phase = _PHASES.get(_read_phase(box), "starting")
    signum = -returncode if returncode is not None and returncode < 0 else None
    if returncode is not None and returncode > 128:
        signum = returncode - 128
    if signum == signal.SIGXCPU:
        return f"the model used up its CPU time limit ({limits.cpu_seconds} s) while {phase}"
    if signum == signal.SIGKILL:
        return (
            f"the sandbox process was killed while {phase}: it most likely exceeded the memory "
            f"limit ({limits.memory_mb} MB) or the CPU limit ({limits.cpu_seconds} s)"
        )
    if signum is not None:
        name = signal.Signals(signum).name if signum in signal.valid_signals() else str(signum)
        return (
            f"the sandbox process crashed with {name} while {phase} (possibly out of memory, "
            f"limit {limits.memory_mb} MB){_last_error_line(box)}"
        )
    return f"the sandbox process exited with code {returncode} while {phase}{_last_error_line(box)}"


def _last_error_line(box: Path) -> str:
    raw = _read_child_file(box / STDERR, 4096, tail=True)
    lines = raw.decode(errors="replace").splitlines() if raw is not None else []
    useful = [line.strip() for line in lines if line.strip() and not line.startswith(" ")]
    if not useful:
        return ""
    line = useful[-1].replace(str(box), "<sandbox>")
    konan_root = str(Path(konan.__file__).resolve().parent.parent)
    for prefix in sorted({sys.prefix, sys.base_prefix, konan_root}, key=len, reverse=True):
        line = line.replace(prefix, "<python>")
    return f": {line[:300]}"


def _lists(extra: object) -> dict[str, list[str]]:
    """The only extras a failure may carry to the API: the type or global names it found.
    (The result file is written next to the model's code, so it is treated as untrusted.)"""
    if not isinstance(extra, dict):
        return {}
    return {
        key: [str(v)[:300] for v in extra[key][:200]]
        for key in ("untrusted_types", "globals")
        if isinstance(extra.get(key), list)
    }


def _report(data: object, isolation: _Isolation, wall: float) -> ValidationReport:
    try:
        if not isinstance(data, dict):
            raise TypeError("report is not an object")
        return _parse_report(data, isolation, wall)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(
            f"the sandbox returned a malformed result ({exc})", extra={"reason": "crashed"}
        ) from None


def _parse_report(data: dict[str, Any], isolation: _Isolation, wall: float) -> ValidationReport:
    names = data.get("feature_names")
    classes = data.get("classes")
    probabilities = data.get("probabilities")
    if data["output_kind"] not in get_args(OutputKind):
        raise ValueError(f"output kind {data['output_kind']!r}")
    if data["output_type"] not in get_args(ValueType):
        raise ValueError(f"output type {data['output_type']!r}")
    if classes is not None and not all(isinstance(c, str | int | float) for c in classes):
        raise ValueError("classes must be strings or numbers")
    return ValidationReport(
        flavor=str(data["flavor"]),
        feature_names=tuple(str(n) for n in names) if names is not None else None,
        n_features=int(data["n_features"]) if data.get("n_features") is not None else None,
        classes=tuple(classes) if classes is not None else None,
        has_proba=bool(data["has_proba"]),
        output_kind=data["output_kind"],
        output_type=data["output_type"],
        sample_rows=int(data["sample_rows"]),
        predictions=tuple(data["predictions"]),
        probabilities=(
            tuple(tuple(float(p) for p in row) for row in probabilities)
            if probabilities is not None
            else None
        ),
        untrusted_types=tuple(str(t) for t in data.get("untrusted_types", ())),
        isolation=(*isolation.labels, "rlimits", "clean-env", "private-dir", "timeout"),
        load_seconds=float(data["load_seconds"]),
        predict_seconds=float(data["predict_seconds"]),
        wall_seconds=wall,
        sample_predictions=_sample_predictions(data.get("sample_predictions")),
    )


def _sample_predictions(values: object) -> tuple[Any, ...] | None:
    """Scalars only (the result file is untrusted); anything else means no profile."""
    if not isinstance(values, list):
        return None
    if not all(v is None or isinstance(v, str | int | float) for v in values):
        return None
    return tuple(values)
