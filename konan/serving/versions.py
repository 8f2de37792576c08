"""Model versions in a model server: fetch, verify, load, warm up, and swap revisions.

`ModelLoader` turns a `ServedVersion` into a `LoadedVersion`: the artifact comes from the
artifact store (a local file, or a verified download into the cache), its bytes must hash to
the spec's sha256, the flavor's loader builds the model with exactly the trust the spec grants,
and one synthetic row built from the signature must predict before the version may serve.
When the spec names a compiled artifact (ONNX compiled from scikit-learn at registration), that
one is fetched, verified, loaded and warmed up first; if any of that fails the reason is
logged (and kept in `LoadedVersion.fallback`) and the original artifact serves instead.

`Reloader` polls the spec file (mtime, size and inode, every ~0.5 s). A new revision is built
in its thread — versions whose artifact is already loaded are reused, the rest loaded and
warmed up — and only a complete `RoutingTable` replaces the current one, in one assignment.
A revision that fails keeps the old one serving; the failure is reported (and retried with
back-off, in case the artifact store was only briefly away).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from konan.backends.artifacts import ArtifactIntegrityError, ArtifactStore
from konan.backends.artifacts.base import make_private_dir, sha256_of_file
from konan.core.errors import KonanError, NotFound
from konan.registry.signature import Signature
from konan.serving.flavors import LoadedModel, load_model
from konan.serving.metrics import Histogram, ServingMetrics
from konan.serving.routing import RoutingTable
from konan.serving.spec import ServedVersion, ServingSpec
from konan.serving.validation import Checked, Checker, Rejected

log = logging.getLogger("konan.serving.versions")

# A version whose calls average more than this runs in a worker thread instead of on the event
# loop, so health checks, stats and other requests are not stuck behind it. Fast models (ONNX,
# linear sklearn) stay inline: a thread hand-off would cost more than their prediction.
OFFLOAD_AFTER_SECONDS = 0.002


class LoadFailure(Exception):
    """A version or revision that cannot serve; `code` is what /readyz and /stats report."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.message}"


class ModelOutputError(Exception):
    """The model answered, but not one prediction per row."""


@dataclass(eq=False)
class LoadedVersion:
    served: ServedVersion
    model: LoadedModel
    checker: Checker
    histogram: Histogram
    with_proba: bool
    ewma: float = 0.0
    offload: bool = False
    artifact: str = "original"  # "compiled" when the spec's compiled artifact serves
    fallback: str | None = None  # why the compiled artifact is not serving, if there is one
    version: int = field(init=False)
    model_version_id: int = field(init=False)
    header: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.version = self.served.version
        self.model_version_id = self.served.model_version_id
        self.header = str(self.version).encode()

    def predict(self, checked: Checked) -> tuple[Any, Any]:
        # Timed here, around the model alone: timing from the event loop would include the wait
        # for a worker thread once offloaded, which kept fast models offloaded for good.
        started = time.perf_counter()
        try:
            if self.with_proba:
                labels, proba = self.model.predict_with_proba(checked.columns)
            else:
                labels, proba = self.model.predict(checked.columns), None
        finally:
            self.observe(time.perf_counter() - started)
        if len(labels) != checked.rows or (proba is not None and len(proba) != checked.rows):
            raise ModelOutputError(
                f"{len(labels)} predictions for {checked.rows} rows from version {self.version}"
            )
        return labels, proba

    def observe(self, seconds: float) -> None:
        self.ewma += 0.2 * (seconds - self.ewma)
        # Hysteresis: a busy machine's occasional slow call may offload a fast model for a
        # moment, but it comes back inline once calls are well under the threshold again.
        limit = OFFLOAD_AFTER_SECONDS / 2 if self.offload else OFFLOAD_AFTER_SECONDS
        self.offload = self.ewma > limit


def _reuse_key(served: ServedVersion) -> tuple[Any, ...]:
    compiled = (served.compiled.flavor, served.compiled.sha256) if served.compiled else None
    return (
        served.sha256,
        served.flavor,
        served.trusted,
        tuple(sorted(served.trusted_types)),
        compiled,
    )


@dataclass(frozen=True)
class _Model:
    model: LoadedModel
    artifact: str
    fallback: str | None


class ModelLoader:
    def __init__(
        self,
        store: ArtifactStore,
        cache_dir: Path,
        workdir: Path,
        metrics: ServingMetrics,
        *,
        onnx_threads: int = 1,
    ) -> None:
        self.store = store
        self.cache_dir = cache_dir
        self.workdir = workdir
        self.metrics = metrics
        self.onnx_threads = onnx_threads

    def fetch(self, served: ServedVersion) -> Path:
        """A local file whose bytes hash to the spec's sha256; LoadFailure otherwise."""
        name = f"version {served.version} (artifact {served.sha256[:12]}…)"
        try:
            path = self.store.local_path(served.sha256, self.cache_dir)
        except NotFound:
            raise LoadFailure("artifact_missing", f"{name} is not in the artifact store") from None
        except ArtifactIntegrityError as exc:
            raise LoadFailure("artifact_integrity", f"{name}: {exc.detail}") from None
        except Exception as exc:  # the store is down or refuses: maybe transient, retried
            raise LoadFailure(
                "artifact_missing", f"{name} could not be fetched: {type(exc).__name__}: {exc}"
            ) from None
        actual = sha256_of_file(path)
        if actual != served.sha256:
            if path.is_relative_to(self.cache_dir):
                path.unlink(missing_ok=True)  # a bad cached copy: fetch again next time
            raise LoadFailure(
                "artifact_integrity",
                f"{name}: the stored bytes hash to {actual[:12]}…, not to the spec's sha256; "
                "refusing to serve them",
            )
        return path

    def load_model(self, served: ServedVersion) -> LoadedModel:
        path = self.fetch(served)
        try:
            make_private_dir(self.workdir)
            return load_model(
                path,
                served.flavor,
                trusted_types=served.trusted_types,
                allow_pickle=served.trusted,
                workdir=self.workdir,
                onnx_threads=self.onnx_threads,
            )
        except KonanError as exc:
            raise LoadFailure(
                "load_error", f"version {served.version} ({served.flavor}): {exc.detail}"
            ) from None
        except Exception as exc:
            raise LoadFailure(
                "load_error",
                f"version {served.version} ({served.flavor}): {type(exc).__name__}: {exc}",
            ) from None

    def load_compiled(self, served: ServedVersion) -> LoadedModel:
        """The version's compiled artifact (verified like the original; no pickle trust)."""
        assert served.compiled is not None
        as_artifact = served.model_copy(
            update={
                "sha256": served.compiled.sha256,
                "flavor": served.compiled.flavor,
                "trusted": False,
                "trusted_types": [],
            }
        )
        return self.load_model(as_artifact)

    def _loaded(
        self, served: ServedVersion, signature: Signature, spec: ServingSpec, model: _Model
    ) -> LoadedVersion:
        loaded = LoadedVersion(
            served=served,
            model=model.model,
            checker=Checker(signature, spec.unseen_category),
            histogram=self.metrics.histogram(served.version),
            with_proba=model.model.has_proba and signature.outputs.kind == "label",
            artifact=model.artifact,
            fallback=model.fallback,
        )
        warm_up(loaded)
        return loaded

    def _load(
        self, served: ServedVersion, signature: Signature, spec: ServingSpec
    ) -> LoadedVersion:
        """Compiled first when there is one; the original if it cannot load or warm up."""
        started = time.monotonic()
        fallback = None
        if served.compiled is not None:
            try:
                model = _Model(self.load_compiled(served), "compiled", None)
                loaded = self._loaded(served, signature, spec, model)
            except LoadFailure as exc:
                fallback = exc.reason
                log.warning(
                    "version %d: not serving its compiled %s artifact (%s); loading the "
                    "original %s artifact instead",
                    served.version,
                    served.compiled.flavor,
                    exc.reason,
                    served.flavor,
                )
            else:
                log.info(
                    "loaded version %d (compiled %s, from %s) in %.2f s",
                    served.version,
                    served.compiled.flavor,
                    served.flavor,
                    time.monotonic() - started,
                )
                return loaded
        model = _Model(self.load_model(served), "original", fallback)
        loaded = self._loaded(served, signature, spec, model)
        log.info(
            "loaded version %d (%s) in %.2f s",
            served.version,
            served.flavor,
            time.monotonic() - started,
        )
        return loaded

    def build(self, spec: ServingSpec, previous: RoutingTable | None) -> RoutingTable:
        """Every version of `spec` loaded and warmed up, as a routing table; LoadFailure else."""
        reusable: dict[tuple[Any, ...], _Model] = {}
        if previous is not None:
            for old in previous.versions.values():
                reusable[_reuse_key(old.served)] = _Model(old.model, old.artifact, old.fallback)
        versions: dict[int, LoadedVersion] = {}
        for served in spec.versions:
            try:
                signature = Signature.model_validate(served.signature)
            except ValidationError as exc:
                raise LoadFailure(
                    "load_error",
                    f"version {served.version}: invalid signature: {exc.errors()[0]['msg']}",
                ) from None
            known = reusable.get(_reuse_key(served))
            if known is None:
                loaded = self._load(served, signature, spec)
                reusable[_reuse_key(served)] = _Model(
                    loaded.model, loaded.artifact, loaded.fallback
                )
            else:
                loaded = self._loaded(served, signature, spec, known)
            versions[served.version] = loaded
        return RoutingTable(spec, versions)


def warm_up(loaded: LoadedVersion) -> None:
    """Two predictions on a synthetic row: the first pays lazy initialisation, the second
    gives the latency that decides whether calls run inline or in a worker thread."""
    try:
        checked = loaded.checker.validate([loaded.checker.synthetic_row()])
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            loaded.predict(checked)
            timings.append(time.perf_counter() - started)
    except Rejected as exc:
        raise LoadFailure(
            "load_error",
            f"version {loaded.version}: its signature cannot produce a valid row: {exc.detail}",
        ) from None
    except Exception as exc:
        raise LoadFailure(
            "load_error",
            f"version {loaded.version} failed its warm-up prediction: "
            f"{type(exc).__name__}: {str(exc)[:300]}",
        ) from None
    loaded.ewma = min(timings)
    loaded.offload = loaded.ewma > OFFLOAD_AFTER_SECONDS


class Reloader:
    """Watches the spec file and installs each new revision once it is fully loaded."""

    def __init__(
        self,
        path: Path,
        loader: ModelLoader,
        spec: ServingSpec,
        *,
        poll_seconds: float = 0.5,
        on_swap: Callable[[RoutingTable], None] | None = None,
    ) -> None:
        self.path = path
        self.loader = loader
        self.poll_seconds = poll_seconds
        self.latest_spec = spec  # the newest valid spec read (the key source comes from it)
        self.table: RoutingTable | None = None
        self.error: LoadFailure | None = None
        self.pending_revision: int | None = None
        self.swaps = 0
        self._on_swap = on_swap
        self._seen: tuple[int, int, int] | None = None
        self._failed: ServingSpec | None = None
        self._retry_at = 0.0
        self._backoff = 2.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="konan-reloader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _run(self) -> None:
        try:
            self._seen = self._stat()
        except OSError:
            self._seen = None
        pending: ServingSpec | None = self.latest_spec  # the spec read at start: load it now
        while not self._stop.is_set():
            if pending is None:
                pending = self._poll()
            if pending is None:
                self._stop.wait(self.poll_seconds)
                continue
            self._install(pending)
            pending = None

    def _poll(self) -> ServingSpec | None:
        """A spec to load now, if the file changed (or a failed load is due for a retry)."""
        try:
            stat = self._stat()
        except OSError as exc:
            self._report(LoadFailure("spec_unreadable", f"{self.path.name}: {exc}"))
            return None
        retry_due = self._failed is not None and time.monotonic() >= self._retry_at
        if stat == self._seen and not retry_due:
            return None
        self._seen = stat
        try:
            spec = ServingSpec.read(self.path)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"])
            self._report(
                LoadFailure("spec_invalid", f"{self.path.name}: {where}: {problem['msg']}")
            )
            return None
        except (OSError, ValueError) as exc:
            self._report(LoadFailure("spec_invalid", f"{self.path.name}: {exc}"))
            return None
        self.latest_spec = spec
        if self.table is not None and spec == self.table.spec:
            # Back to the revision being served (a broken one was reverted): all is well.
            self.error = None
            self._failed = None
            return None
        if spec == self._failed and not retry_due:
            return None
        return spec

    def _install(self, spec: ServingSpec) -> None:
        self.pending_revision = spec.revision
        try:
            table = self.loader.build(spec, self.table)
        except LoadFailure as exc:
            self._failed = spec
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, 60.0)
            self._report(exc, revision=spec.revision)
            return
        finally:
            self.pending_revision = None
        if self._stop.is_set():
            return
        self.table = table
        self.swaps += 1
        self.error = None
        self._failed = None
        self._backoff = 2.0
        if self._on_swap is not None:
            self._on_swap(table)
        log.info("serving revision %d of %s", table.revision, table.deployment)

    def _report(self, failure: LoadFailure, *, revision: int | None = None) -> None:
        if self.error is None or self.error.reason != failure.reason:
            where = f"revision {revision}" if revision is not None else "the spec"
            if self.table is not None:
                log.error(
                    "%s refused, still serving revision %d: %s",
                    where,
                    self.table.revision,
                    failure.reason,
                )
            else:
                log.error("%s cannot be served: %s", where, failure.reason)
        self.error = failure
