"""The Python client over Konan's REST API. What users import: `konan.Client(url, token)`.

It imports nothing server-side (no SQLAlchemy, Celery or FastAPI): a data scientist's notebook
only needs httpx2 and pydantic. Error payloads come back as the same exception classes the
server raised (`konan.core.errors`).
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx2

from konan.core.errors import KonanError, NotFound, error_for_code
from konan.sdk.uploads import (
    ProgressCallback,
    ProgressReader,
    is_classifier,
    model_payload,
    table_payload,
)

DEFAULT_TIMEOUT = httpx2.Timeout(30.0, connect=5.0)


class Client:
    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        *,
        timeout: httpx2.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx2.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx2.Client(base_url=self.url, timeout=timeout, transport=transport)
        self.token = token

    # ---- plumbing --------------------------------------------------------------------------

    @property
    def token(self) -> str | None:
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        self._token = value
        if value:
            self._http.headers["Authorization"] = f"Bearer {value}"
        else:
            self._http.headers.pop("Authorization", None)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise _error_from(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- auth and health -------------------------------------------------------------------

    def login(self, username: str, password: str) -> dict[str, Any]:
        """Log in and use the returned access token for the following calls."""
        tokens: dict[str, Any] = self.request(
            "POST", "/api/v1/auth/login", json={"username": username, "password": password}
        )
        self.token = tokens["access_token"]
        return tokens

    def me(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/api/v1/auth/me")
        return result

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/healthz")
        return result

    def readiness(self) -> dict[str, Any]:
        """The readiness report, whether ready (200) or not (503)."""
        response = self._http.get("/readyz")
        body: dict[str, Any] = response.json()
        return body

    # ---- registry: models and versions -------------------------------------------------------

    def create_model(
        self, name: str, task: str, *, project: str = "default", description: str = ""
    ) -> dict[str, Any]:
        body = {"name": name, "task": task, "project": project, "description": description}
        result: dict[str, Any] = self.request("POST", "/api/v1/models", json=body)
        return result

    def get_model(self, name: str, *, project: str = "default") -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "GET", f"/api/v1/models/{name}", params={"project": project}
        )
        return result

    def list_models(self, *, project: str | None = None) -> list[dict[str, Any]]:
        params = {"project": project} if project else {}
        result: list[dict[str, Any]] = self.request("GET", "/api/v1/models", params=params)
        return result

    def register_model(
        self,
        model_or_path: Any,
        *,
        name: str,
        project: str = "default",
        task: str | None = None,
        reference_data: Any = None,
        target: str | None = None,
        metrics: dict[str, float] | None = None,
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        flavor: str | None = None,
        signature: dict[str, Any] | None = None,
        source_commit: str | None = None,
        parent_version: int | None = None,
        training_dataset: dict[str, Any] | None = None,
        trusted: bool = False,
        idempotency_key: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Register a new version of model `name` (created first if it doesn't exist).

        `model_or_path` is a scikit-learn estimator (saved with skops), a file path (skops,
        ONNX, a custom-model zip, …) or raw bytes. `reference_data` is a DataFrame or a CSV or
        Parquet path. Retries reuse one Idempotency-Key, so a retried upload never registers
        twice.
        """
        filename, stream, _size, detected_flavor = model_payload(model_or_path)
        try:
            self.get_model(name, project=project)
        except NotFound:
            kind = task
            if kind is None:
                classifier = is_classifier(model_or_path)
                if classifier is None:
                    raise ValueError(f"model {name!r} does not exist yet: pass task=") from None
                kind = "classification" if classifier else "regression"
            self.create_model(name, kind, project=project)
        metadata: dict[str, Any] = {
            "flavor": flavor or detected_flavor,
            "metrics": metrics or {},
            "params": params or {},
            "tags": tags or {},
            "signature": signature,
            "target": target,
            "source_commit": source_commit,
            "parent_version": parent_version,
            "training_dataset": training_dataset,
            "trusted": trusted,
        }
        files: dict[str, Any] = {
            "artifact": (filename, ProgressReader(stream, progress), "application/octet-stream")
        }
        if reference_data is not None:
            ref_name, ref_stream, _ = table_payload(reference_data)
            files["reference_data"] = (
                ref_name,
                ProgressReader(ref_stream, progress),
                "application/octet-stream",
            )
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        try:
            result: dict[str, Any] = self.request(
                "POST",
                f"/api/v1/models/{name}/versions",
                params={"project": project},
                data={"metadata": json.dumps({k: v for k, v in metadata.items() if v is not None})},
                files=files,
                headers=headers,
            )
        finally:
            for part in files.values():
                part[1].close()
        return result

    def list_versions(self, name: str, *, project: str = "default") -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "GET", f"/api/v1/models/{name}/versions", params={"project": project}
        )
        return result

    def get_version(self, name: str, version: int, *, project: str = "default") -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "GET", f"/api/v1/models/{name}/versions/{version}", params={"project": project}
        )
        return result

    def download_artifact(
        self, name: str, version: int, dest: str | Path, *, project: str = "default"
    ) -> Path:
        """Download a version's artifact to `dest` (a file path); returns the path."""
        target = Path(dest)
        with self._http.stream(
            "GET",
            f"/api/v1/models/{name}/versions/{version}/artifact",
            params={"project": project},
        ) as response:
            if response.status_code >= 400:
                response.read()
                raise _error_from(response)
            with target.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        return target

    def set_alias(
        self, name: str, alias: str, version: int, *, reason: str = "", project: str = "default"
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PUT",
            f"/api/v1/models/{name}/aliases/{alias}",
            params={"project": project},
            json={"version": version, "reason": reason},
        )
        return result

    def list_aliases(self, name: str, *, project: str = "default") -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "GET", f"/api/v1/models/{name}/aliases", params={"project": project}
        )
        return result

    def alias_history(
        self, name: str, *, alias: str | None = None, project: str = "default"
    ) -> list[dict[str, Any]]:
        params = {"project": project, **({"alias": alias} if alias else {})}
        result: list[dict[str, Any]] = self.request(
            "GET", f"/api/v1/models/{name}/aliases/history", params=params
        )
        return result

    # ---- registry: datasets ------------------------------------------------------------------

    def push_dataset(
        self,
        data: Any,
        *,
        name: str,
        project: str = "default",
        description: str = "",
        progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Upload a new version of dataset `name` (a DataFrame or a CSV/Parquet path)."""
        filename, stream, _ = table_payload(data)
        metadata = {"name": name, "project": project, "description": description}
        reader = ProgressReader(stream, progress)
        try:
            result: dict[str, Any] = self.request(
                "POST",
                "/api/v1/datasets",
                data={"metadata": json.dumps(metadata)},
                files={"file": (filename, reader, "application/octet-stream")},
            )
        finally:
            reader.close()
        return result

    def list_datasets(self, *, project: str | None = None) -> list[dict[str, Any]]:
        params = {"project": project} if project else {}
        result: list[dict[str, Any]] = self.request("GET", "/api/v1/datasets", params=params)
        return result

    def dataset_versions(self, name: str, *, project: str = "default") -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "GET", f"/api/v1/datasets/{name}/versions", params={"project": project}
        )
        return result

    # ---- deployments ------------------------------------------------------------------------

    def deploy(
        self,
        name: str,
        *,
        model: str,
        version: int,
        project: str = "default",
        runtime: str | None = None,
        replicas: tuple[int, int] = (1, 1),
        production_gated: bool = False,
        wait: float | None = 60.0,
    ) -> dict[str, Any]:
        """Create deployment `name` serving `version` of `model`; by default wait until ready."""
        body: dict[str, Any] = {
            "name": name,
            "model": model,
            "version": version,
            "project": project,
            "replicas": {"min": replicas[0], "max": replicas[1]},
            "production_gated": production_gated,
        }
        if runtime:
            body["runtime"] = runtime
        result: dict[str, Any] = self.request("POST", "/api/v1/deployments", json=body)
        return self.wait_until_ready(name, timeout=wait) if wait else result

    def wait_until_ready(
        self, name: str, *, timeout: float = 60.0, revision: int | None = None
    ) -> dict[str, Any]:
        """Poll until the deployment is ready (on `revision`, if given); raise if it failed."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.get_deployment(name)
            on_revision = revision is None or current["revision"] >= revision
            if current["status"] == "ready" and on_revision:
                return current
            if current["status"] == "failed":
                raise KonanError(
                    f"deployment {name!r} failed: {current['status_reason']}: "
                    f"{current['status_message']}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"deployment {name!r} is still {current['status']} after {timeout:g}s"
                )
            time.sleep(0.5)

    def get_deployment(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/v1/deployments/{name}")
        return result

    def list_deployments(self, *, project: str | None = None) -> list[dict[str, Any]]:
        params = {"project": project} if project else {}
        result: list[dict[str, Any]] = self.request("GET", "/api/v1/deployments", params=params)
        return result

    def revisions(self, name: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"/api/v1/deployments/{name}/revisions")
        return result

    def set_traffic(
        self,
        name: str,
        *,
        champion: int | None = None,
        canary: int | None = None,
        canary_weight: float = 0.0,
        shadow: int | None = None,
        reason: str = "",
    ) -> dict[str, Any]:
        body = {
            "champion": champion,
            "canary": canary,
            "canary_weight": canary_weight,
            "shadow": shadow,
            "reason": reason,
        }
        result: dict[str, Any] = self.request(
            "PUT", f"/api/v1/deployments/{name}/traffic", json=body
        )
        return result

    def promote(self, name: str, *, version: int | None = None, reason: str = "") -> dict[str, Any]:
        """Make the canary (or `version`) the champion; on a gated deployment this returns the
        approval request instead ({"approval_id", …})."""
        result: dict[str, Any] = self.request(
            "POST",
            f"/api/v1/deployments/{name}/promote",
            json={"version": version, "reason": reason},
        )
        return result

    def rollback(
        self, name: str, *, revision: int | None = None, reason: str = ""
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST",
            f"/api/v1/deployments/{name}/rollback",
            json={"revision": revision, "reason": reason},
        )
        return result

    def scale(self, name: str, *, min_replicas: int, max_replicas: int) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST",
            f"/api/v1/deployments/{name}/scale",
            json={"replicas": {"min": min_replicas, "max": max_replicas}},
        )
        return result

    def delete_deployment(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/deployments/{name}")

    def deployment_logs(self, name: str, *, tail: int = 200) -> list[str]:
        result: dict[str, Any] = self.request(
            "GET", f"/api/v1/deployments/{name}/logs", params={"tail": tail}
        )
        lines: list[str] = result["lines"]
        return lines

    def predict(self, name: str, inputs: list[dict[str, Any]], *, api_key: str) -> dict[str, Any]:
        """Predict through the control plane with an API key (not the user's token)."""
        response = self._http.post(
            f"/api/v1/deployments/{name}/predict",
            json={"inputs": inputs},
            headers={"Authorization": f"Bearer {api_key}"},
        )
        if response.status_code >= 400:
            raise _error_from(response)
        result: dict[str, Any] = response.json()
        return result

    # ---- API keys ----------------------------------------------------------------------------

    def create_api_key(
        self,
        name: str,
        *,
        deployments: list[str] | None = None,
        project: str | None = None,
        scopes: list[str] | None = None,
        expires_at: str | None = None,
        rate_limit: str | None = None,
    ) -> dict[str, Any]:
        """A new key; its secret (`key`) is returned only here. `rate_limit` like
        "100/second" caps the key's requests on each model server process."""
        body = {
            "name": name,
            "deployments": deployments or [],
            "project": project,
            "scopes": scopes or ["predict"],
            "expires_at": expires_at,
            "rate_limit": rate_limit,
        }
        result: dict[str, Any] = self.request("POST", "/api/v1/api-keys", json=body)
        return result

    def list_api_keys(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/api/v1/api-keys")
        return result

    def revoke_api_key(self, key_id: int) -> None:
        self.request("DELETE", f"/api/v1/api-keys/{key_id}")

    # ---- monitoring ------------------------------------------------------------------------

    @staticmethod
    def _window(
        start: datetime | str | None, end: datetime | str | None, **extra: Any
    ) -> dict[str, Any]:
        params = {k: v for k, v in extra.items() if v is not None}
        for key, value in (("start", start), ("end", end)):
            if value is not None:
                params[key] = value.isoformat() if isinstance(value, datetime) else value
        return params

    def monitoring_health(
        self,
        deployment: str,
        *,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        bucket: str = "1h",
    ) -> dict[str, Any]:
        """Requests, errors and latency percentiles per bucket (`health()` is the server's)."""
        result: dict[str, Any] = self.request(
            "GET",
            f"/api/v1/deployments/{deployment}/monitoring/health",
            params=self._window(start, end, bucket=bucket),
        )
        return result

    def drift(
        self,
        deployment: str,
        *,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        version: int | None = None,
        threshold: float | None = None,
        feature_thresholds: dict[str, float] | None = None,
        drift_share: float | None = None,
        method: str | None = None,
    ) -> dict[str, Any]:
        """Drift per feature; arguments override the deployment's stored settings."""
        params = self._window(
            start,
            end,
            version=version,
            threshold=threshold,
            drift_share=drift_share,
            method=method,
        )
        if feature_thresholds:
            params["feature_threshold"] = [f"{k}={v}" for k, v in feature_thresholds.items()]
        result: dict[str, Any] = self.request(
            "GET", f"/api/v1/deployments/{deployment}/monitoring/drift", params=params
        )
        return result

    def monitoring_settings(self, deployment: str) -> dict[str, Any]:
        """The deployment's stored drift settings (the defaults when none were stored)."""
        result: dict[str, Any] = self.request(
            "GET", f"/api/v1/deployments/{deployment}/monitoring/settings"
        )
        return result

    def set_monitoring_settings(self, deployment: str, drift: dict[str, Any]) -> dict[str, Any]:
        """Replace the deployment's drift settings: ``{"method", "threshold",
        "feature_thresholds", "drift_share", "numeric_test", "categorical_test", "tests"}``
        (omitted keys take their defaults). A maintainer's change; audited."""
        result: dict[str, Any] = self.request(
            "PUT", f"/api/v1/deployments/{deployment}/monitoring/settings", json={"drift": drift}
        )
        return result

    def performance(
        self,
        deployment: str,
        *,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        bucket: str | None = None,
        version: int | None = None,
        estimated: bool = True,
    ) -> dict[str, Any]:
        params = self._window(start, end, bucket=bucket, version=version)
        params["estimated"] = "true" if estimated else "false"
        result: dict[str, Any] = self.request(
            "GET", f"/api/v1/deployments/{deployment}/monitoring/performance", params=params
        )
        return result

    def feedback(
        self,
        deployment: str,
        items: list[dict[str, Any]],
        *,
        api_key: str | None = None,
    ) -> dict[str, Any]:
        """Ground truth: `items` = [{"request_id": …, "labels": […]}, …]; with a user's token,
        or a feedback-scoped `api_key`."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        result: dict[str, Any] = self.request(
            "POST",
            f"/api/v1/deployments/{deployment}/feedback",
            json={"items": items},
            headers=headers,
        )
        return result

    def create_alert_rule(
        self,
        deployment: str,
        kind: str,
        threshold: float,
        *,
        window_seconds: int | None = None,
        feature: str | None = None,
        metric: str | None = None,
        cooldown_seconds: int = 3600,
        webhook_url: str | None = None,
        enabled: bool = True,
    ) -> dict[str, Any]:
        body = {
            "kind": kind,
            "threshold": threshold,
            "window_seconds": window_seconds,
            "feature": feature,
            "metric": metric,
            "cooldown_seconds": cooldown_seconds,
            "webhook_url": webhook_url,
            "enabled": enabled,
        }
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/deployments/{deployment}/alert-rules", json=body
        )
        return result

    def list_alert_rules(self, deployment: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "GET", f"/api/v1/deployments/{deployment}/alert-rules"
        )
        return result

    def delete_alert_rule(self, deployment: str, rule_id: int) -> None:
        self.request("DELETE", f"/api/v1/deployments/{deployment}/alert-rules/{rule_id}")

    def alerts(self, deployment: str, *, state: str | None = None) -> list[dict[str, Any]]:
        params = {"state": state} if state else {}
        result: list[dict[str, Any]] = self.request(
            "GET", f"/api/v1/deployments/{deployment}/alerts", params=params
        )
        return result

    def export_predictions(
        self,
        deployment: str,
        dest: str | Path,
        *,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        format: str = "csv",
    ) -> Path:
        """Stream the raw prediction export (csv or parquet) to `dest`; returns the path."""
        target = Path(dest)
        with self._http.stream(
            "GET",
            f"/api/v1/deployments/{deployment}/monitoring/export",
            params=self._window(start, end, format=format),
        ) as response:
            if response.status_code >= 400:
                response.read()
                raise _error_from(response)
            with target.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        return target


def _error_from(response: httpx2.Response) -> KonanError:
    try:
        payload = response.json()
    except ValueError:
        payload = {"detail": response.text or response.reason_phrase}
    if not isinstance(payload, dict):
        payload = {"detail": str(payload)}
    detail = payload.get("detail")
    code = payload.get("code")
    cls = error_for_code(code if isinstance(code, str) else None, response.status_code)
    extra = {k: v for k, v in payload.items() if k not in ("detail", "code")}
    err = cls(detail if isinstance(detail, str) else str(detail), extra=extra)
    err.status_code = response.status_code  # type: ignore[attr-defined]
    return err
