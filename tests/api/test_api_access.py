"""Auth matrix, project isolation, admin-only routes, idempotency and the `alignd keys` / `migrate` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

GOOD_SFT = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})


def _new_project_key(server, name: str) -> str:
    with server.client(server.admin_key) as admin:
        project = admin.post("/v1/projects", json={"name": name})
        assert project.status_code == 200, project.text
        return admin.post(f"/v1/projects/{project.json()['id']}/api_keys").json()["key"]


@pytest.fixture(scope="module")
def two_projects(server):
    import secrets

    tag = secrets.token_hex(3)
    key_a, key_b = _new_project_key(server, f"a-{tag}"), _new_project_key(server, f"b-{tag}")
    with server.client(key_a) as client:
        file_id = client.post("/v1/files", data={"purpose": "fine-tune"},
                              files={"file": ("a.jsonl", GOOD_SFT.encode())}).json()["id"]
        body = {"model": "alignd-tiny", "training_file": file_id}
        job_id = client.post("/v1/fine_tuning/jobs", json=body).json()["id"]
    return {"a": key_a, "b": key_b, "file": file_id, "job": job_id}


def test_auth_matrix(server, two_projects):
    job, file_id = two_projects["job"], two_projects["file"]
    routes = [("GET", "/v1/files"), ("GET", f"/v1/files/{file_id}"), ("GET", f"/v1/files/{file_id}/content"),
              ("GET", "/v1/fine_tuning/jobs"), ("GET", f"/v1/fine_tuning/jobs/{job}"),
              ("GET", f"/v1/fine_tuning/jobs/{job}/events"), ("GET", f"/v1/fine_tuning/jobs/{job}/checkpoints"),
              ("GET", f"/v1/fine_tuning/jobs/{job}/metrics"), ("GET", "/v1/models")]
    for headers in ({}, {"Authorization": "Bearer ak-wrong"}, {"Authorization": "Basic abc"}):
        with server.client() as client:
            for method, path in routes:
                response = client.request(method, path, headers=headers)
                assert response.status_code == 401, (method, path, headers)
                assert response.json()["error"]["type"] == "authentication_error"
    with server.client(two_projects["a"]) as owner, server.client(two_projects["b"]) as other:
        for method, path in routes:
            assert owner.request(method, path).status_code == 200, path
            expected = 200 if path in ("/v1/files", "/v1/fine_tuning/jobs", "/v1/models") else 404
            assert other.request(method, path).status_code == expected, path
        assert job not in [j["id"] for j in other.get("/v1/fine_tuning/jobs").json()["data"]]
        assert other.post(f"/v1/fine_tuning/jobs/{job}/cancel").status_code == 404
        assert other.delete(f"/v1/files/{file_id}").status_code == 404
        # Another project's file or job cannot be named as an input either.
        response = other.post("/v1/fine_tuning/jobs", json={"model": "alignd-tiny", "training_file": file_id})
        assert response.status_code == 400 and response.json()["error"]["param"] == "training_file"
        response = other.post("/v1/fine_tuning/jobs", json={"model": job, "training_file": file_id})
        assert response.status_code == 400 and response.json()["error"]["param"] == "model"
        for client in (owner, other):
            assert client.post("/v1/projects", json={"name": "nope"}).status_code == 403
            assert client.get("/v1/projects").status_code == 403
            assert client.post("/v1/projects/default/api_keys").status_code == 403
    with server.client(server.admin_key) as admin:
        assert admin.get("/v1/fine_tuning/jobs").status_code == 200  # acts on the default project
        assert admin.get(f"/v1/fine_tuning/jobs/{job}").status_code == 404
        assert admin.post("/v1/projects", json={"name": "bad name!"}).status_code == 400
        assert admin.post("/v1/projects/proj-missing/api_keys").status_code == 404


def test_idempotency_key(server, two_projects):
    body = {"model": "alignd-tiny", "training_file": two_projects["file"], "metadata": {"run": "idem"}}
    with server.client(two_projects["a"]) as client:
        first = client.post("/v1/fine_tuning/jobs", json=body, headers={"Idempotency-Key": "k-1"})
        again = client.post("/v1/fine_tuning/jobs", json=body, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == again.status_code == 200 and first.json()["id"] == again.json()["id"]
        other = client.post("/v1/fine_tuning/jobs", json={**body, "seed": 3}, headers={"Idempotency-Key": "k-1"})
        assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
        fresh = client.post("/v1/fine_tuning/jobs", json=body, headers={"Idempotency-Key": "k-2"})
        assert fresh.json()["id"] != first.json()["id"]
        listed = client.get("/v1/fine_tuning/jobs", params={"metadata": json.dumps({"run": "idem"})}).json()["data"]
        assert len(listed) == 2
    with server.client(two_projects["b"]) as client:  # keys are per project
        file_b = client.post("/v1/files", data={"purpose": "fine-tune"},
                             files={"file": ("b.jsonl", GOOD_SFT.encode())}).json()["id"]
        response = client.post("/v1/fine_tuning/jobs", json={**body, "training_file": file_b},
                               headers={"Idempotency-Key": "k-1"})
        assert response.status_code == 200 and response.json()["id"] != first.json()["id"]


def test_keys_command_prints_the_key_last_and_it_works(server, tmp_path):
    env = {**os.environ, "ALIGND_DATABASE_URL": server.database_url, "ALIGND_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "services.cli.main", "keys", "create", "--project", "cli-proj"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("ak-")
    with server.client(key) as client:
        assert client.get("/v1/fine_tuning/jobs").status_code == 200
    migrate = subprocess.run([sys.executable, "-m", "services.cli.main", "migrate"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert migrate.returncode == 0 and "revision 0004" in migrate.stdout, migrate.stderr


def _wait_for_status(client, path: str, status: int, timeout: float = 2.0) -> float:
    """Seconds until `path` answers `status` (polling); fails after `timeout`."""
    started = time.monotonic()
    while True:
        if client.get(path).status_code == status:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"{path} still not {status} after {timeout}s"
        time.sleep(0.01)


def test_revoked_key_is_refused_at_once(server, tmp_path):
    import secrets

    on_postgres = server.database_url.startswith("postgresql")
    # The key cache is what could let a revoked key through; it is on exactly where revocations are heard.
    assert server.app.state.alignd.keys.enabled == on_postgres
    with server.client(server.admin_key) as admin:
        project = admin.post("/v1/projects", json={"name": f"revoke-{secrets.token_hex(3)}"}).json()
        keys = [admin.post(f"/v1/projects/{project['id']}/api_keys", json={"name": name}).json()
                for name in ("by-api", "by-cli")]
        for key in keys:
            with server.client(key["key"]) as client:  # used once: now cached
                assert client.get("/v1/fine_tuning/jobs").status_code == 200

        # Through the admin API: this process forgets the key before answering.
        revoked = admin.delete(f"/v1/projects/{project['id']}/api_keys/{keys[0]['id']}")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
        with server.client(keys[0]["key"]) as client:
            response = client.get("/v1/fine_tuning/jobs")
            assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
        with server.client(keys[1]["key"]) as client:
            assert client.get("/v1/fine_tuning/jobs").status_code == 200  # the other key still works
        listed = {row["id"]: row for row in admin.get(f"/v1/projects/{project['id']}/api_keys").json()["data"]}
        assert listed[keys[0]["id"]]["revoked_at"] and listed[keys[1]["id"]]["revoked_at"] is None
        missing = admin.delete(f"/v1/projects/{project['id']}/api_keys/key-missing")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "api_key_not_found"

    # From another process, by the shown prefix: on Postgres the commit's notice reaches the server's listener.
    env = {**os.environ, "ALIGND_DATABASE_URL": server.database_url, "ALIGND_HOME": str(tmp_path)}
    cli = [sys.executable, "-m", "services.cli.main", "keys"]
    ambiguous = subprocess.run([*cli, "revoke", "ak-"], env=env, cwd=tmp_path, capture_output=True, text=True,
                               timeout=60)
    assert ambiguous.returncode == 1 and "no API key" in ambiguous.stderr
    result = subprocess.run([*cli, "revoke", keys[1]["prefix"]], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and keys[1]["id"] in result.stdout, result.stderr
    with server.client(keys[1]["key"]) as client:
        assert _wait_for_status(client, "/v1/fine_tuning/jobs", 401) < 1.0
    listing = subprocess.run([*cli, "list", "--project", project["name"]], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    header, *rows = listing.stdout.splitlines()
    revoked = header.index("REVOKED")  # keys list prints aligned columns under a header row
    assert sorted(row[revoked:revoked + 2] for row in rows if row.startswith("key-")) == ["20", "20"], listing.stdout


def test_key_cache_never_keeps_a_key_revoked_during_its_lookup():
    from services.api.auth import KeyCache
    from services.store.models import Project

    cache, project = KeyCache(), Project(id="proj-x", name="x", created_at=0.0)
    cache.put("h", project, cache.generation)
    assert cache.get("h") is None  # off until a listener enables it
    cache.enable()
    started = cache.generation  # a lookup begins...
    cache.forget("h")  # ...the key is revoked meanwhile...
    cache.put("h", project, started)  # ...and the lookup's answer arrives late
    assert cache.get("h") is None
    cache.put("h", project, cache.generation)
    assert cache.get("h") is project
    cache.disable()
    assert cache.get("h") is None
