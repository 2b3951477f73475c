"""Reward clients: function, HTTP (a real server on loopback), DeploymentHandle-shaped objects; failures are clear."""

from __future__ import annotations

import json
import sys
import threading
import time
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alignment_core.rewards import RewardSourceError, build_reward_client
from alignment_core.rewards.function import FunctionRewardClient
from alignment_core.rewards.handle import HandleRewardClient
from alignment_core.rewards.http import HttpRewardClient
from alignment_core.specs import RewardSource

PROMPTS = ["Sort the letters: c a b", "Sort the letters: b a"]
COMPLETIONS = ["a b c", "b a"]


def test_builtin_demo_checker_scores_through_the_factory() -> None:
    client = build_reward_client(RewardSource(type="function", function="demo_sort", batch_size=1))
    assert client.score(PROMPTS, COMPLETIONS) == [1.0, 0.0]


@pytest.fixture
def reward_module() -> Iterator[types.ModuleType]:
    """A user's reward module importable as 'user_rewards:...'."""
    module = types.ModuleType("user_rewards")
    module.calls = []

    def length_reward(prompts: list[str], completions: list[str]) -> list[float]:
        module.calls.append(len(prompts))
        return [float(len(text)) for text in completions]

    def broken(prompts: list[str], completions: list[str]) -> list[float]:
        raise KeyError("reward table missing")

    def slow(prompts: list[str], completions: list[str]) -> list[float]:
        time.sleep(30)
        return [0.0] * len(prompts)

    module.length_reward, module.broken, module.slow = length_reward, broken, slow
    module.short = lambda prompts, completions: [1.0]
    module.not_a_number = lambda prompts, completions: ["high"] * len(prompts)
    sys.modules["user_rewards"] = module
    yield module
    del sys.modules["user_rewards"]


def test_function_client_batches(reward_module: types.ModuleType) -> None:
    client = FunctionRewardClient.from_name("user_rewards:length_reward", batch_size=2)
    assert client.score(["p"] * 5, ["a", "bb", "ccc", "d", "ee"]) == [1.0, 2.0, 3.0, 1.0, 2.0]
    assert reward_module.calls == [2, 2, 1]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("user_rewards:broken", "raised KeyError: 'reward table missing'"),
        ("user_rewards:short", "returned 1 scores for 2 completions"),
        ("user_rewards:not_a_number", "score 0 is not a number: 'high'"),
        ("user_rewards:missing", "has no attribute 'missing'"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("demo", "expected 'module:callable'"),
    ],
)
def test_function_client_failures_name_the_cause(reward_module: types.ModuleType, name: str, message: str) -> None:
    with pytest.raises(RewardSourceError, match="function") as caught:
        FunctionRewardClient.from_name(name).score(PROMPTS, COMPLETIONS)
    assert message in str(caught.value)


def test_function_client_times_out_instead_of_hanging(reward_module: types.ModuleType) -> None:
    client = FunctionRewardClient.from_name("user_rewards:slow", timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(RewardSourceError, match=r"no answer within 0.5 s \(reward.timeout_s\)"):
        client.score(PROMPTS, COMPLETIONS)
    assert time.monotonic() - started < 5


class _RewardHandler(BaseHTTPRequestHandler):
    delay_s = 0.0
    batches: list[int] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(self.delay_s)
        if self.path == "/broken":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"model crashed")
            return
        type(self).batches.append(len(body["prompts"]))
        scores = [float(len(text)) for text in body["completions"]]
        payload = json.dumps({"scores": scores} if self.path != "/wrong" else {"rewards": scores}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def reward_server() -> Iterator[str]:
    _RewardHandler.delay_s, _RewardHandler.batches = 0.0, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RewardHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_client_scores_in_batches(reward_server: str) -> None:
    client = build_reward_client(RewardSource(type="http", url=f"{reward_server}/score", batch_size=2))
    assert client.score(["p"] * 3, ["a", "bb", "ccc"]) == [1.0, 2.0, 3.0]
    assert _RewardHandler.batches == [2, 1]


def test_http_client_errors(reward_server: str) -> None:
    with pytest.raises(RewardSourceError, match="HTTP 500: model crashed"):
        HttpRewardClient(f"{reward_server}/broken").score(PROMPTS, COMPLETIONS)
    with pytest.raises(RewardSourceError, match="no 'scores' field"):
        HttpRewardClient(f"{reward_server}/wrong").score(PROMPTS, COMPLETIONS)
    _RewardHandler.delay_s = 2.0
    started = time.monotonic()
    with pytest.raises(RewardSourceError, match="no answer within 0.3 s"):
        HttpRewardClient(f"{reward_server}/score", timeout_s=0.3).score(PROMPTS, COMPLETIONS)
    assert time.monotonic() - started < 2.0


def test_http_endpoint_down_is_a_clear_error() -> None:
    import socket

    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(RewardSourceError, match=rf"http endpoint http://127.0.0.1:{port}/score failed: ConnectError"):
        HttpRewardClient(f"http://127.0.0.1:{port}/score", timeout_s=2).score(PROMPTS, COMPLETIONS)


class _Response:
    def __init__(self, scores: list[float] | None, error: Exception | None = None):
        self.scores, self.error = scores, error

    def result(self, timeout_s: float | None = None) -> list[float]:
        if self.error is not None:
            raise self.error
        return self.scores


class GetTimeoutError(Exception):
    """Named like Ray's, which the client must recognise without importing Ray."""


class _Handle:
    """The shape of a Ray Serve DeploymentHandle: `.remote(...)` -> response with `.result(timeout_s=)`."""

    def __init__(self, error: Exception | None = None):
        self.error, self.calls = error, []

    def remote(self, prompts: list[str], completions: list[str]) -> _Response:
        self.calls.append((prompts, completions))
        return _Response([float(len(text)) for text in completions], self.error)


def test_handle_client_and_its_failures() -> None:
    handle = _Handle()
    client = build_reward_client(RewardSource(type="serve", application="rm", batch_size=1), handle=handle)
    assert client.score(PROMPTS, COMPLETIONS) == [5.0, 3.0]
    assert len(handle.calls) == 2
    with pytest.raises(RewardSourceError, match="serve application 'rm' failed: no answer within 60 s"):
        HandleRewardClient(_Handle(GetTimeoutError("slow")), "rm").score(PROMPTS, COMPLETIONS)
    with pytest.raises(RewardSourceError, match="RuntimeError: replica died"):
        HandleRewardClient(_Handle(RuntimeError("replica died")), "rm").score(PROMPTS, COMPLETIONS)
    with pytest.raises(RewardSourceError, match="no DeploymentHandle was given"):
        build_reward_client(RewardSource(type="serve", application="rm"))
