"""Property test of the OpenAPI schema: no malformed request to the jobs, files, pipelines or projects endpoints
gets a 500, and every refusal keeps the error shape.

Requests are derived from the app's own /openapi.json: every JSON body property is replaced by hostile values
(wrong types, huge numbers, long or odd strings, deep nesting), required properties are dropped, unknown ones
added, pairs of such changes combined at random (fixed seed), bodies sent that are not JSON objects, and path
and query parameters given odd values. Cheaper than a schemathesis run and deterministic; the same idea.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

GOOD_SFT = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
HOSTILE_VALUES: list[Any] = [
    None, True, False, 0, -1, 2**70, -(2**70), 1e308, -1e-308, "", "x" * 5000, "\u0000\ud7ff\U0001f600", "auto",
    "ft:", "ftjob-missing", "file-missing", "file-results-000000000000000000000000", [], [None], [{}], {}, {"": None},
    {"type": None}, {"type": "dpo", "dpo": []}, {"type": "ppo", "ppo": {"reward_model": 5}}, [[[[[]]]]],
]
NOT_OBJECTS = [b"", b"null", b"[]", b'"text"', b"1", b"{", b'{"model": }', b"\xff\xfe", b"{}" * 1000,
               b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000]
ODD_IDS = ["x", "%00", "..%2F..", "ftjob-" + "a" * 3000, "\u00e9\u00e8", "ftjob-00000000", "file-results-zz", " "]
ODD_QUERIES = [{"limit": "-1"}, {"limit": "abc"}, {"limit": "100000000000000000000"}, {"after": "\u0000"},
               {"after": "ftevent-x"}, {"after": "ftckpt-99999999999999999999999"}, {"status": "nope"},
               {"metadata": "{"}, {"metadata": "[1]"}, {"metadata": '{"a": 1}'}, {"metadata[a]": "b", "limit": "0"},
               {"after_step": "-5"}, {"after_step": "1e3"}, {"after_step": str(2**40)},
               {"after": "ftevent-\u0661\u0662"}, {"order": "sideways"}, {"purpose": "\u0000"}]


def _assert_refused_cleanly(response, what) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:500])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["type"], (what, error)


def _body_schema(operation: dict, spec: dict) -> dict | None:
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if schema is None:
        return None
    if "anyOf" in schema:  # optional bodies: Model | None
        schema = next(option for option in schema["anyOf"] if "$ref" in option)
    name = schema["$ref"].rsplit("/", 1)[-1]
    return spec["components"]["schemas"][name]


def _mutations(base: dict[str, Any], schema: dict, rng: random.Random) -> list[dict[str, Any]]:
    properties = list(schema.get("properties", {}))
    single = [{**base, name: value} for name in properties for value in HOSTILE_VALUES]
    single += [{key: value for key, value in base.items() if key != name} for name in schema.get("required", [])]
    single += [{**base, "unknown_field": 1}, {**base, "method": {"type": "supervised", "supervised": {"x": 1}}}]
    paired = []
    for _ in range(150):
        first, second = rng.choice(single), rng.choice(single)
        paired.append({**first, **{key: value for key, value in second.items() if key not in base
                                   or second[key] is not base[key]}})
    return single + paired


@pytest.fixture(scope="module")
def fuzz_key(server) -> str:
    """A project of its own: the jobs that malformed-but-valid bodies create are cancelled afterwards, so other
    tests' claims never meet them."""
    import secrets

    with server.client(server.admin_key) as admin:
        project = admin.post("/v1/projects", json={"name": f"fuzz-{secrets.token_hex(3)}"}).json()
        key = admin.post(f"/v1/projects/{project['id']}/api_keys").json()["key"]
    yield key
    with server.client(key) as client:
        while queued := client.get("/v1/fine_tuning/jobs", params={"status": "queued", "limit": 100}).json()["data"]:
            for job in queued:
                assert client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").status_code == 200


@pytest.fixture(scope="module")
def targets(server, fuzz_key) -> dict[str, Any]:
    with server.client(fuzz_key) as client:
        file_id = client.post("/v1/files", data={"purpose": "fine-tune"},
                              files={"file": ("d.jsonl", GOOD_SFT.encode())}).json()["id"]
        body = {"model": "alignd-tiny", "training_file": file_id}
        job_id = client.post("/v1/fine_tuning/jobs", json=body).json()["id"]
        spec = client.get("/openapi.json").json()
    return {"file": file_id, "job": job_id, "spec": spec}


def test_no_malformed_json_body_gets_a_500(server, fuzz_key, targets):
    spec, rng = targets["spec"], random.Random(0)
    bases = {
        "/v1/fine_tuning/jobs": {"model": "alignd-tiny", "training_file": targets["file"]},
        "/v1/pipelines": {"model": "alignd-tiny", "stages": [{"method": "supervised",
                                                              "training_file": targets["file"]}]},
    }
    checked = 0
    with server.client(fuzz_key) as client:
        for path, base in bases.items():
            schema = _body_schema(spec["paths"][path]["post"], spec)
            assert schema is not None and schema.get("properties"), path
            for body in _mutations(base, schema, rng):
                _assert_refused_cleanly(client.post(path, json=body), (path, body))
                checked += 1
            for raw in NOT_OBJECTS:
                response = client.post(path, content=raw, headers={"content-type": "application/json"})
                _assert_refused_cleanly(response, (path, raw[:40]))
                assert response.status_code == 400, (path, raw[:40], response.text[:300])
        # Stage-level fields of a pipeline, one at a time.
        stage_schema = spec["components"]["schemas"]["PipelineStage"]
        for name in stage_schema["properties"]:
            for value in HOSTILE_VALUES:
                stage = {"method": "supervised", "training_file": targets["file"], name: value}
                body = {"model": "alignd-tiny", "stages": [stage]}
                _assert_refused_cleanly(client.post("/v1/pipelines", json=body), body)
                checked += 1
    assert checked > 1000


def test_no_odd_path_or_query_gets_a_500(server, fuzz_key, targets):
    job, file_id = targets["job"], targets["file"]
    with server.client(fuzz_key) as client:
        for odd in ODD_IDS:
            for method, path in [("GET", "/v1/fine_tuning/jobs/{}"), ("POST", "/v1/fine_tuning/jobs/{}/cancel"),
                                 ("POST", "/v1/fine_tuning/jobs/{}/pause"), ("POST", "/v1/fine_tuning/jobs/{}/resume"),
                                 ("GET", "/v1/fine_tuning/jobs/{}/events"), ("GET", "/v1/fine_tuning/jobs/{}/metrics"),
                                 ("GET", "/v1/fine_tuning/jobs/{}/checkpoints"), ("GET", "/v1/files/{}"),
                                 ("GET", "/v1/files/{}/content"), ("DELETE", "/v1/files/{}"),
                                 ("GET", "/v1/pipelines/{}")]:
                _assert_refused_cleanly(client.request(method, path.format(odd)), (method, path, odd))
        for query in ODD_QUERIES:
            for path in ("/v1/fine_tuning/jobs", f"/v1/fine_tuning/jobs/{job}/events",
                         f"/v1/fine_tuning/jobs/{job}/checkpoints", f"/v1/fine_tuning/jobs/{job}/metrics",
                         "/v1/files"):
                _assert_refused_cleanly(client.get(path, params=query), (path, query))
        # Uploads: odd forms, content types and purposes.
        for data, files, headers in [
            ({"purpose": ["fine-tune", "x"]}, {"file": ("d.jsonl", GOOD_SFT.encode())}, None),
            ({"purpose": "fine-tune"}, {"file": ("\u0000/../d.jsonl", GOOD_SFT.encode())}, None),
            ({"purpose": "fine-tune"}, {"file": ("d.jsonl", b"")}, None),
            ({"purpose": "fine-tune"}, {"file": ("d.jsonl", b"\xff\xfe\x00")}, None),
            ({"purpose": "fine-tune"}, {"other": ("d.jsonl", GOOD_SFT.encode())}, None),
        ]:
            response = client.post("/v1/files", data=data, files=files, headers=headers)
            _assert_refused_cleanly(response, (data, files.keys()))
        for content_type in ("multipart/form-data", "multipart/form-data; boundary=", "text/plain",
                             "multipart/form-data; boundary=abc"):
            response = client.post("/v1/files", content=b"--abc\r\nnot a form", headers={"content-type": content_type})
            _assert_refused_cleanly(response, content_type)
            assert response.status_code == 400, (content_type, response.text[:300])
        assert client.get(f"/v1/files/{file_id}").status_code == 200  # the fuzzing broke nothing
