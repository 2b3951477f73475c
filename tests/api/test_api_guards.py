"""An unexpected error answers the JSON 500 and leaves the client's keep-alive connection usable."""

from __future__ import annotations


def test_an_unexpected_error_keeps_the_connection(failing_server):
    connections: list[object] = []
    with failing_server.client(failing_server.admin_key) as client:
        client.event_hooks["response"] = [
            lambda response: connections.append(response.extensions["network_stream"])]
        failed = client.get("/v1/test-failure")
        assert failed.status_code == 500
        assert failed.json()["error"]["code"] == "internal_error"
        assert "a bug in a handler" not in failed.text  # the details go to the server log only
        after = client.get("/v1/files")
        assert after.status_code == 200
    # One connection served both: uvicorn did not close it after the 500 (the openai SDK's next request on a
    # closed keep-alive connection failed with APIConnectionError).
    assert len(connections) == 2 and connections[0] is connections[1]
