"""A PPO job's reward model as a Ray Serve application, alive exactly as long as the stage.

The application is named after the job, so a new attempt after a dispatcher crash redeploys over
the orphan (the Serve controller is detached and outlives a killed dispatcher) instead of leaking a
second copy. Requests are batched with `@serve.batch`; the same replicas answer the PPO rollout
code's DeploymentHandle calls and an external `POST /<application>/score`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ray import serve

from alignment_core.specs import RewardSource

log = logging.getLogger(__name__)

# Serve's HTTP proxy; kept off the API's default port 8000.
SERVE_HTTP_PORT = int(os.environ.get("ALIGND_SERVE_HTTP_PORT", "8100"))
SERVE_HTTP_HOST = os.environ.get("ALIGND_SERVE_HTTP_HOST", "127.0.0.1")


def reward_application_name(job_id: str) -> str:
    return f"alignd-reward-{job_id}"


class RewardModelServer:
    """One replica: the reward model loaded once, scoring pairs gathered from concurrent requests."""

    def __init__(self, model_path: str, batch_size: int) -> None:
        import torch

        from alignment_core.rewards.local_model import LocalModelRewardClient

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.client = LocalModelRewardClient.from_path(model_path, device, batch_size)
        self._score_pairs.set_max_batch_size(batch_size)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _score_pairs(self, prompts: list[str], completions: list[str]) -> list[float]:
        return self.client.score(list(prompts), list(completions))

    async def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return list(await asyncio.gather(*(self._score_pairs(p, c) for p, c in zip(prompts, completions))))

    async def __call__(self, request_or_prompts: Any, completions: list[str] | None = None) -> Any:
        if completions is not None:  # a DeploymentHandle call: handle.remote(prompts, completions)
            return await self.score(request_or_prompts, completions)
        return await self._http(request_or_prompts)

    async def _http(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if request.method != "POST" or not request.url.path.rstrip("/").endswith("/score"):
            return JSONResponse({"error": {"message": "POST {prompts, completions} to .../score"}}, status_code=404)
        try:
            body = await request.json()
            prompts, completions = body["prompts"], body["completions"]
            if not (isinstance(prompts, list) and isinstance(completions, list)):
                raise ValueError("'prompts' and 'completions' must be lists of strings")
            scores = await self.score([str(p) for p in prompts], [str(c) for c in completions])
        except (ValueError, KeyError, TypeError) as error:
            return JSONResponse({"error": {"message": f"bad request: {error}"}}, status_code=400)
        return JSONResponse({"scores": scores})


def deploy_reward_model(job_id: str, model_path: str, source: RewardSource) -> str:
    """Deploy (or redeploy over an orphan) the job's reward application; returns its name once healthy."""
    name = reward_application_name(job_id)
    serve.start(http_options={"host": SERVE_HTTP_HOST, "port": SERVE_HTTP_PORT})
    actor_options: dict[str, float] = {"num_cpus": 0 if source.gpus_per_replica else 1}
    if source.gpus_per_replica:
        actor_options["num_gpus"] = source.gpus_per_replica
    deployment = serve.deployment(
        RewardModelServer,
        name="reward_model",
        num_replicas=source.replicas,
        ray_actor_options=actor_options,
        max_ongoing_requests=max(32, source.batch_size * 2),
    )
    serve.run(deployment.bind(model_path, source.batch_size), name=name, route_prefix=f"/{name}")
    log.info("reward model %s served as application %s (%d replicas)", model_path, name, source.replicas)
    return name


def delete_reward_model(job_id: str) -> None:
    """Remove the job's application if it exists; safe to call twice."""
    name = reward_application_name(job_id)
    try:
        serve.delete(name, _blocking=True)
    except Exception as error:  # noqa: BLE001 - best effort on the way out; never mask the stage's outcome
        log.warning("could not delete serve application %s: %s", name, error)


def application_exists(job_id: str) -> bool:
    return reward_application_name(job_id) in serve.status().applications


@contextmanager
def served_reward_model(job_id: str, model_path: str, source: RewardSource) -> Iterator[str]:
    """Serve the reward model for the duration of a PPO stage, deleting it whatever happens."""
    try:
        yield deploy_reward_model(job_id, model_path, source)
    finally:
        delete_reward_model(job_id)
