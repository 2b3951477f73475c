"""Single-worker CPU stages on a long-lived Ray actor that has torch / transformers / trl imported already.

Ray Train V2 starts a controller actor, a placement group and a fresh worker process for every `fit()`,
and that process imports torch / transformers / trl again: on a 2-core CPU, 10-25 s before a tiny job's
first step (docs/benchmarks.md). A Train worker group cannot be reused across `fit()` calls, but a stage
with one CPU worker uses nothing of the group (no process group, no ranks to line up), so the dispatcher
runs it on its warm worker instead: the same train-loop body (`launcher.run_stage_in_worker`), the same
`JobChannel`, context and checkpoint layout. Multi-worker, GPU and DeepSpeed stages keep TorchTrainer.

What keeps the Train path's guarantees (docs/architecture.md):
- resources: the actor itself asks for no CPU; each attempt reserves its CPUs with a placement group on
  the actor's node for as long as the stage runs, removed whatever the outcome, so Ray's accounting and
  other dispatchers see the same load as with Train;
- fate-sharing: the actor is owned by the dispatcher (the Ray driver), so kill -9 of the dispatcher
  kills it with the attempt it runs;
- one attempt at a time: the actor runs one call at a time and belongs to one dispatcher;
- a failed or fenced attempt retires the actor (its process may hold broken state); the next job gets
  a fresh one.
"""

from __future__ import annotations

import gc
import importlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

log = logging.getLogger(__name__)

# What a stage imports: paid once per actor instead of once per job.
PREIMPORTED_MODULES = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "datasets",
    "alignment_core.stages.sft",
    "alignment_core.stages.reward_model",
    "alignment_core.stages.dpo",
    "alignment_core.stages.ppo",
    "alignment_core.modeling.loading",
    "alignment_core.modeling.saving",
    "services.workers.launcher",
)
# A reservation tried first on the warm actor's node; after this long (that node is busy) any node will do.
PREFERRED_NODE_WAIT_S = 1.0
STOP_CHECK_INTERVAL_S = 1.0  # how often a stage still waiting for CPUs looks for cancel / pause


def fits_warm_worker(spec: Any) -> bool:
    """Whether the stage can skip Ray Train: one CPU worker, no DeepSpeed (which needs a process group)."""
    distribution = spec.distribution
    return distribution.num_workers == 1 and distribution.gpus_per_worker == 0 and distribution.zero_stage == 0


def threads_for(cpus: float) -> int:
    """Torch threads of a stage with `cpus` CPUs, as Ray Train sets them (OMP_NUM_THREADS)."""
    return max(1, int(cpus))


@ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)
class WarmStageWorker:
    """One process that runs stages one after another; its CPUs are reserved per stage by the pool."""

    def __init__(self) -> None:
        for module in PREIMPORTED_MODULES:
            importlib.import_module(module)

    def run(self, config: dict[str, Any]) -> None:
        from services.workers.launcher import run_stage_in_worker

        try:
            run_stage_in_worker(config, rank=0, world_size=1)
        finally:
            gc.collect()  # the stage's model and data go before the actor waits for the next job


class WarmWorkerPool:
    """A dispatcher's warm worker: started ahead of the first job, kept between jobs, replaced after a failure."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self._actor: Any = None
        self._node_id: str | None = None
        self._threads = 0

    def prestart(self, cpus: float = 1) -> None:
        """Start the actor on this node now (for stages of `cpus` CPUs, the spec's default), so the first
        job finds torch & co. imported."""
        if self._actor is None:
            self._start(ray.get_runtime_context().get_node_id(), threads_for(cpus))

    def run(self, config: dict[str, Any], cpus: float, channel: Any) -> str | None:
        """Run one attempt's stage; raises what the stage raised. Returns a stop reason instead when a
        cancel / pause / fence came while the stage was still waiting for its CPUs."""
        reserved = self._reserve(cpus, channel)
        if isinstance(reserved, str):
            return reserved
        try:
            if self._actor is None or (self._node_id, self._threads) != (reserved.node_id, threads_for(cpus)):
                self.retire()
                self._start(reserved.node_id, threads_for(cpus))
            channel.mark.remote("reserved", time.time())
            ray.get(self._actor.run.remote(config))
        except BaseException:
            self.retire()
            raise
        finally:
            remove_placement_group(reserved.group)
        return None

    def retire(self) -> None:
        if self._actor is not None:
            ray.kill(self._actor, no_restart=True)
        self._actor, self._node_id, self._threads = None, None, 0

    def _start(self, node_id: str, threads: int) -> None:
        # The thread count must be in the environment when torch starts: calling torch.set_num_threads(2) later
        # in a process that started with OMP_NUM_THREADS=1 (Ray's default for a 0-CPU actor) trained 1.5-3.5x
        # slower on this 2-core machine. Ray Train sets the same variable from the worker's CPUs.
        env = {**self.env, "OMP_NUM_THREADS": str(threads)}
        self._actor = WarmStageWorker.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
            runtime_env={"env_vars": env},
        ).remote()
        self._node_id, self._threads = node_id, threads

    def _reserve(self, cpus: float, channel: Any) -> _Reservation | str:
        """A placement group of `cpus` CPUs, on the warm actor's node if it has them free soon; or the stop
        reason that came while waiting."""
        if self._node_id is not None:
            group = placement_group([{"CPU": cpus}], bundle_label_selector=[{"ray.io/node-id": self._node_id}])
            if group.wait(PREFERRED_NODE_WAIT_S):
                return _Reservation(group, self._node_id)
            remove_placement_group(group)
        group = placement_group([{"CPU": cpus}])
        while not group.wait(STOP_CHECK_INTERVAL_S):
            reason = ray.get(channel.get_stop.remote(), timeout=30)
            if reason is not None:
                remove_placement_group(group)
                return reason
        node_id = ray.util.placement_group_table(group)["bundles_to_node_id"][0]
        return _Reservation(group, node_id)


@dataclass
class _Reservation:
    group: PlacementGroup
    node_id: str
