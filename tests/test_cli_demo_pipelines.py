"""`alignd demo`'s two pipelines as the dashboard's Pipelines view lists them: each name's stages are the
pipeline's own jobs, and the second names the pipeline whose SFT model it starts from (O20)."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cli.demo import submit_demo
from services.cli.rest_client import AligndClient, ApiRequestFailed

SHORT_NAMES = {"supervised": "SFT", "dpo": "DPO", "reward_model": "RM", "ppo": "PPO"}


@pytest.fixture()
def client(tmp_path: Path, alignd_serve) -> Iterator[AligndClient]:
    key = f"sk-alignd-demo-{secrets.token_urlsafe(12)}"
    env = {name: value for name, value in os.environ.items() if not name.startswith("ALIGND_")}
    env.update(HOME=str(tmp_path), ALIGND_ADMIN_KEY=key)
    with alignd_serve(env, tmp_path / "serve.log") as url:
        yield AligndClient(url, key)


def test_each_pipeline_name_lists_exactly_its_own_stages(client: AligndClient, tmp_path: Path) -> None:
    jobs = submit_demo(client, tmp_path / "data")
    try:
        pipelines = client.http.get("/v1/pipelines").raise_for_status().json()["data"]
        assert len(pipelines) == 2
        by_name = {pipeline["name"]: pipeline for pipeline in pipelines}
        for name, pipeline in by_name.items():
            stages = re.fullmatch(r"demo: ([A-Z]+(?: -> [A-Z]+)*)(?: \(.*\))?", name)
            assert stages, name
            methods = [job["method"]["type"] for job in pipeline["jobs"]]
            assert stages.group(1).split(" -> ") == [SHORT_NAMES[method] for method in methods], (name, methods)
        sft_dpo = next(pipeline for pipeline in pipelines if pipeline["jobs"][0]["method"]["type"] == "supervised")
        rm_ppo = next(pipeline for pipeline in pipelines if pipeline is not sft_dpo)
        # The RM -> PPO pipeline starts from the other one's SFT job, and its name says which pipeline that is.
        assert rm_ppo["jobs"][0]["model"] == sft_dpo["job_ids"][0]
        assert f"SFT model of '{sft_dpo['name']}'" in rm_ppo["name"]
    finally:
        for job in jobs:
            with contextlib.suppress(ApiRequestFailed):  # a stage cancelled with its input already
                client.action(job["id"], "cancel")
