"""Step timing, FLOP counts and memory readings shared by every benchmark variant."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# H100 SXM dense bf16 peak (datasheet), the denominator of every MFU figure here.
PEAK_FLOPS = 989e12


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepClock:
    """Wall time between consecutive optimizer-step ends, device synchronised; the first `warmup` are dropped."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.marks: list[float] = []
        self.losses: list[float] = []

    def mark(self) -> None:
        synchronize()
        self.marks.append(time.perf_counter())

    def start(self) -> None:
        self.mark()

    @property
    def step_times(self) -> list[float]:
        intervals = [b - a for a, b in zip(self.marks, self.marks[1:])]
        return intervals[self.warmup :]

    def median(self) -> float | None:
        times = self.step_times
        return statistics.median(times) if times else None


def trainer_callback(clock: StepClock):
    """A transformers TrainerCallback that marks `clock` at every optimizer step and records the loss."""
    from transformers import TrainerCallback

    class _Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock.start()

        def on_step_end(self, args, state, control, **kwargs):
            clock.mark()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                clock.losses.append(float(logs["loss"]))

    return _Clock()


def flops_per_token(params: int, trainable_full: bool, layers: int, hidden: int, seq: int) -> float:
    """Training FLOPs per token: 6N full / 4N adapters (no weight gradients), plus attention 12·L·d·s (PaLM)."""
    dense = (6 if trainable_full else 4) * params
    attention = 12 * layers * hidden * seq
    return dense + attention


def peak_memory_gib(prefix: str = "") -> dict:
    import torch

    if not torch.cuda.is_available():
        return {f"{prefix}peak_allocated_gib": None, f"{prefix}peak_reserved_gib": None}
    return {
        f"{prefix}peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
        f"{prefix}peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
    }


def reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


@contextmanager
def profiled(ctx: dict) -> Iterator[None]:
    """With ctx["profile"], torch.profiler over the whole run; the kernel table goes to $OUT (or the work dir)."""
    if not ctx.get("profile"):
        yield
        return
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        yield
    table = prof.key_averages().table(
        sort_by="self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total",
        row_limit=45,
        max_name_column_width=70,
    )
    folder = Path(os.environ.get("OUT") or ctx["work"])
    (folder / f"profile-{ctx['case']}-{ctx['impl']}.txt").write_text(table)


def summarize(clock: StepClock, tokens_per_step: int, flops_token: float, dense_flops_token: float) -> dict:
    """Median step time, tokens/s and MFU (with and without the attention term) for one variant."""
    step = clock.median()
    result = {
        "steps_timed": len(clock.step_times),
        "step_s": step,
        "step_times": [round(t, 5) for t in clock.step_times],
        "losses": clock.losses[:20],
    }
    if step:
        tokens_s = tokens_per_step / step
        result.update(
            tokens_s=tokens_s,
            mfu=tokens_s * flops_token / PEAK_FLOPS,
            mfu_dense=tokens_s * dense_flops_token / PEAK_FLOPS,
        )
    result.update(peak_memory_gib())
    return result
