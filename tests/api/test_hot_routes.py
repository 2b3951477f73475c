"""Create and list jobs answer the same through services.api.hot_routes as through FastAPI's own routing.

`Content-Type: application/json` takes the hot path (once the key is cached: Postgres); the same request with
`; charset=utf-8` is JSON to FastAPI but goes its ordinary way. Every pair must get the same answer.
"""

from __future__ import annotations

import json

SFT = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
HOT, ORDINARY = "application/json", "application/json; charset=utf-8"
VOLATILE = ("id", "created_at", "output_model", "fine_tuned_model", "spec")


def _upload(client) -> str:
    response = client.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": ("d.jsonl", SFT.encode())})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def _post(client, content_type: str, body: bytes, **headers: str):
    return client.post("/v1/fine_tuning/jobs", content=body, headers={"content-type": content_type, **headers})


def _comparable(response) -> tuple[int, object]:
    payload = response.json()
    if response.status_code == 200:
        payload = {key: value for key, value in payload.items() if key not in VOLATILE}
    return response.status_code, payload


def test_create_answers_alike_on_both_paths(server, project_key):
    with server.client(project_key) as client:
        file_id = _upload(client)
        good = {"model": "alignd-tiny", "training_file": file_id, "metadata": {"team": "nlp"}}
        assert client.get("/v1/fine_tuning/jobs").status_code == 200  # the key is in the cache from here on
        # On Postgres the key cache is on (revocations are heard), so HOT requests really take the hot path.
        assert server.app.state.alignd.keys.enabled == server.database_url.startswith("postgresql")
        bodies = [
            json.dumps(good).encode(),
            json.dumps({**good, "lora": True, "seed": 7}).encode(),
            json.dumps({**good, "unknown_field": 1}).encode(),
            json.dumps({**good, "seed": -1}).encode(),
            json.dumps({"model": "alignd-tiny"}).encode(),
            json.dumps({**good, "training_file": "file-missing"}).encode(),
            json.dumps({**good, "method": {"type": "dpo"}}).encode(),
            b'{"model": "alignd-tiny", "training_file": ',
            b"[1, 2]",
            b"[" * 5000,
            b"",
            b'"just a string"',
        ]
        for body in bodies:
            hot, ordinary = _post(client, HOT, body), _post(client, ORDINARY, body)
            assert _comparable(hot) == _comparable(ordinary), (body[:60], hot.text[:300], ordinary.text[:300])
            assert hot.headers["content-type"] == ordinary.headers["content-type"]

        long_key = "k" * 301
        hot = _post(client, HOT, json.dumps(good).encode(), **{"Idempotency-Key": long_key})
        ordinary = _post(client, ORDINARY, json.dumps(good).encode(), **{"Idempotency-Key": long_key})
        assert hot.status_code == 400 and _comparable(hot) == _comparable(ordinary)

        first = _post(client, HOT, json.dumps(good).encode(), **{"Idempotency-Key": "same"})
        again = _post(client, ORDINARY, json.dumps(good).encode(), **{"Idempotency-Key": "same"})
        assert first.status_code == 200 and again.json()["id"] == first.json()["id"]
        reused = _post(client, HOT, json.dumps({**good, "seed": 1}).encode(), **{"Idempotency-Key": "same"})
        assert reused.status_code == 409 and reused.json()["error"]["code"] == "idempotency_key_reused"


def test_requests_without_a_known_key_answer_as_before(server, project_key):
    """FastAPI reads the JSON before it checks the key (bad JSON: 400) and the key before the fields (401)."""
    with server.client() as anonymous, server.client("ak-not-a-key") as stranger:
        for client in (anonymous, stranger):
            for body, status in ((b"not json", 400), (b'{"model": "alignd-tiny", "seed": -1}', 401)):
                answers = [_post(client, content_type, body) for content_type in (HOT, ORDINARY)]
                assert [response.status_code for response in answers] == [status, status], answers[0].text
                assert answers[0].json() == answers[1].json()
            listed = client.get("/v1/fine_tuning/jobs", params={"limit": 0})
            assert listed.status_code == 401 and listed.json()["error"]["type"] == "authentication_error"
            assert listed.headers["www-authenticate"] == "Bearer"


def test_list_errors_and_other_methods_are_unchanged(server, project_key):
    with server.client(project_key) as client:
        limit = client.get("/v1/fine_tuning/jobs", params={"limit": 0})
        assert limit.status_code == 400 and limit.json()["error"]["param"] == "limit"
        status = client.get("/v1/fine_tuning/jobs", params={"status": "bogus"})
        assert status.status_code == 400 and status.json()["error"]["param"] == "status"
        cursor = client.get("/v1/fine_tuning/jobs", params={"after": "ftjob-none"})
        assert cursor.status_code == 400 and cursor.json()["error"]["code"] == "invalid_cursor"
        assert client.head("/v1/fine_tuning/jobs").status_code == 405  # FastAPI's answer: no HEAD route
        refused = client.delete("/v1/fine_tuning/jobs")
        assert refused.status_code == 405 and refused.json()["error"]["code"] == "method_not_allowed"
        page = client.get("/v1/fine_tuning/jobs", params={"limit": 1})
        assert page.status_code == 200 and page.headers["content-type"] == "application/json"
        assert set(page.json()) == {"object", "data", "has_more"}
