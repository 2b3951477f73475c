"""A thin httpx client for the alignd REST API, used by `alignd demo`, the overhead bench and tests."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

TERMINAL_STATUSES = {"succeeded", "failed", "cancelled"}


class ApiRequestFailed(RuntimeError):
    """The API answered with an error object; carries its status and message."""

    def __init__(self, method: str, path: str, status: int, body: Any):
        message = body.get("error", {}).get("message") if isinstance(body, dict) else str(body)
        super().__init__(f"{method} {path} -> HTTP {status}: {message}")
        self.status, self.body = status, body


class AligndClient:
    """Files, jobs and pipelines over HTTP with a bearer key."""

    def __init__(self, url: str, api_key: str, timeout_s: float = 30.0):
        self.http = httpx.Client(base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {api_key}"},
                                 timeout=timeout_s)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            raise ApiRequestFailed(method, path, response.status_code, body)
        return body

    def upload(self, path: Path, purpose: str = "fine-tune") -> str:
        with Path(path).open("rb") as stream:
            return self._call("POST", "/v1/files", files={"file": (Path(path).name, stream)},
                              data={"purpose": purpose})["id"]

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/fine_tuning/jobs", json=body)

    def create_pipeline(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/pipelines", json=body)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/fine_tuning/jobs/{job_id}")

    def list_jobs(self, status: str | None = None, metadata: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Every job with `status` and all of `metadata`, newest first."""
        params: dict[str, Any] = {"limit": 1000}
        if status:
            params["status"] = status
        if metadata:
            params["metadata"] = json.dumps(metadata)
        return self._call("GET", "/v1/fine_tuning/jobs", params=params)["data"]

    def model(self, model_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/models/{model_id}")

    def action(self, job_id: str, name: str) -> dict[str, Any]:
        """POST cancel / pause / resume."""
        return self._call("POST", f"/v1/fine_tuning/jobs/{job_id}/{name}")

    def metrics(self, job_id: str, after_step: int | None = None) -> list[dict[str, Any]]:
        """Every stored metrics row ({step, metrics}) after `after_step`, oldest first."""
        rows: list[dict[str, Any]] = []
        while True:
            params = {"limit": 10000, **({"after_step": after_step} if after_step is not None else {})}
            page = self._call("GET", f"/v1/fine_tuning/jobs/{job_id}/metrics", params=params)
            rows.extend(page["data"])
            if not page.get("has_more") or not page["data"]:
                return rows
            after_step = page["data"][-1]["step"]

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        return self._paged(f"/v1/fine_tuning/jobs/{job_id}/checkpoints")

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return self._paged(f"/v1/fine_tuning/jobs/{job_id}/events")

    def _paged(self, path: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100}
        while True:
            page = self._call("GET", path, params=params)
            rows.extend(page["data"])
            if not page.get("has_more") or not page["data"]:
                return rows
            params["after"] = page["data"][-1]["id"]

    def wait(self, job_id: str, statuses: set[str] = TERMINAL_STATUSES, timeout_s: float = 600,
             poll_s: float = 0.5) -> dict[str, Any]:
        """Poll until the job reaches one of `statuses`; raises TimeoutError naming the last status."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still '{job['status']}' after {timeout_s:.0f} s")
            time.sleep(poll_s)
