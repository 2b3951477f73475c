"""Pick a training set-up that fits the GPUs, following the decision tree of the presets.

Full fine-tuning if it fits, else LoRA, else QLoRA, else ZeRO-3 with offloading. Within a method the
cheapest changes come first: a smaller micro-batch (gradient accumulation keeps the effective batch),
then gradient checkpointing, each tried with DDP, ZeRO-2 and ZeRO-3 when there are several GPUs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from alignment_core.planning.gpus import GIB, GpuInfo, gpu_info
from alignment_core.planning.memory import MemoryEstimate, estimate_memory, gpu_count, method_name
from alignment_core.planning.shape_source import ShapeOverrides
from alignment_core.specs import JobSpec, LoraSpec, QuantizationSpec

METHOD_LABELS = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA (4-bit NF4)"}


class ModelDoesNotFit(ValueError):
    """No set-up fits the GPUs; carries the smallest estimate found and the memory available."""

    def __init__(self, message: str, required_bytes: int, available_bytes: int, estimate: MemoryEstimate | None):
        super().__init__(message)
        self.required_bytes = required_bytes
        self.available_bytes = available_bytes
        self.estimate = estimate


@dataclass(frozen=True)
class Recommendation:
    method: str  # full | lora | qlora
    zero_stage: int
    offload_optimizer: bool
    offload_params: bool
    gradient_checkpointing: bool
    micro_batch_size: int
    gradient_accumulation_steps: int
    num_gpus: int
    estimate: MemoryEstimate
    spec: JobSpec  # the input spec with these settings applied
    reasons: tuple[str, ...] = field(default=())


def recommend(
    spec: JobSpec, gpus: int | None = None, gpu: GpuInfo | str = "H100-80GB", keep_method: bool = False,
    overrides: ShapeOverrides | None = None,
) -> Recommendation:
    """The first set-up of the decision tree that fits `gpus` x `gpu`; raises ModelDoesNotFit if none does.

    `keep_method` starts the tree at the spec's own method (a LoRA spec is never turned into full);
    `overrides` give or change the model's shape (shape_source).
    """
    gpu = gpu_info(gpu)
    num_gpus = gpus if gpus is not None else max(gpu_count(spec), 1)
    order = ["full", "lora", "qlora"]
    if keep_method:
        order = order[order.index(method_name(spec)):]
    reasons: list[str] = []
    smallest: MemoryEstimate | None = None

    as_given = estimate_memory(spec_on_gpus(spec, num_gpus), gpu, overrides=overrides)
    if as_given.fits:
        reasons.append(f"the spec as given fits: {_gib(as_given.total)} of {_gib(gpu.memory_bytes)} per GPU")

    stages: list[tuple[str, list[tuple[int, bool, bool]]]] = [
        (method, _layouts(num_gpus)) for method in order
    ]
    # Last resort: ZeRO-3 with offloading, which trades host memory and speed for GPU memory.
    stages += [(method, _offload_layouts(num_gpus)) for method in order if method != "qlora"]
    for method, layouts in stages:
        best_for_method: MemoryEstimate | None = None
        for candidate in _candidates(spec, method, layouts, num_gpus):
            estimate = estimate_memory(candidate, gpu, overrides=overrides)
            if estimate.fits:
                reasons.append(_why(estimate, gpu))
                return _recommendation(candidate, estimate, reasons)
            if best_for_method is None or estimate.total < best_for_method.total:
                best_for_method = estimate
            if smallest is None or estimate.total < smallest.total:
                smallest = estimate
        if best_for_method is not None:
            offload = " with offloading" if layouts and (layouts[0][1] or layouts[0][2]) else ""
            reasons.append(
                f"{METHOD_LABELS[method]}{offload} needs at least {_gib(best_for_method.total)} per GPU "
                f"(> {_gib(gpu.memory_bytes)})"
            )
    assert smallest is not None
    raise ModelDoesNotFit(
        f"model '{spec.model.name_or_path}' ({smallest.total_params / 1e9:.2f}B parameters, method "
        f"{spec.method_type}) does not fit on {num_gpus} x {gpu.name} ({_gib(gpu.memory_bytes)} each): the "
        f"smallest set-up ({_describe(smallest)}) needs {_gib(smallest.total)} per GPU; use more or larger "
        f"GPUs or shorter sequences (data.max_length)",
        required_bytes=smallest.total,
        available_bytes=gpu.memory_bytes,
        estimate=smallest,
    )


def check_fits(spec: JobSpec, gpu: GpuInfo | str = "H100-80GB",
               overrides: ShapeOverrides | None = None) -> MemoryEstimate:
    """Admission control: the spec's estimate if it fits each GPU, else ModelDoesNotFit with advice. The
    model's shape comes from the same sources as `alignd plan`'s (shape_source)."""
    gpu = gpu_info(gpu)
    estimate = estimate_memory(spec, gpu, overrides=overrides)
    if estimate.fits:
        return estimate
    try:
        advice = recommend(spec, gpus=estimate.num_gpus, gpu=gpu, keep_method=False, overrides=overrides)
        hint = f"; it would fit as: {_describe(advice.estimate)} ({_gib(advice.estimate.total)})"
    except ModelDoesNotFit as error:
        hint = f"; {error}"
    raise ModelDoesNotFit(
        f"model '{spec.model.name_or_path}' ({estimate.total_params / 1e9:.2f}B parameters; shape from "
        f"{estimate.model_source}) with {_describe(estimate)} needs {_gib(estimate.total)} per GPU "
        f"but a {gpu.name} has {_gib(gpu.memory_bytes)}{hint}",
        required_bytes=estimate.total,
        available_bytes=gpu.memory_bytes,
        estimate=estimate,
    )


def _layouts(num_gpus: int) -> list[tuple[int, bool, bool]]:
    """(ZeRO stage, offload optimizer, offload params) without offloading: DDP first, then ZeRO-2 / 3."""
    return [(0, False, False)] if num_gpus == 1 else [(0, False, False), (2, False, False), (3, False, False)]


def _offload_layouts(num_gpus: int) -> list[tuple[int, bool, bool]]:
    return [(3, True, False), (3, True, True)]


def _candidates(
    spec: JobSpec, method: str, layouts: list[tuple[int, bool, bool]], num_gpus: int
) -> Iterator[JobSpec]:
    effective_batch = spec.training.batch_size * spec.training.gradient_accumulation_steps
    micro_batches = _halvings(spec.training.batch_size)
    offloading = any(offload_opt or offload_params for _, offload_opt, offload_params in layouts)
    for checkpointing in ((True,) if offloading else (False, True)):
        for micro_batch in micro_batches:
            for zero_stage, offload_optimizer, offload_params in layouts:
                yield _with_setup(
                    spec, method, num_gpus, zero_stage, offload_optimizer, offload_params, checkpointing,
                    micro_batch, math.ceil(effective_batch / micro_batch),
                )


def _halvings(batch: int) -> list[int]:
    sizes = [batch]
    while sizes[-1] > 1:
        sizes.append(max(1, sizes[-1] // 2))
    return sizes


def spec_on_gpus(spec: JobSpec, num_gpus: int) -> JobSpec:
    """The spec spread over `num_gpus` workers of one GPU each (unchanged if it already spans that many)."""
    if num_gpus == gpu_count(spec):
        return spec
    data = spec.model_dump()
    data["distribution"].update(num_workers=num_gpus, gpus_per_worker=1)
    return JobSpec.model_validate(data)


def _with_setup(
    spec: JobSpec, method: str, num_gpus: int, zero_stage: int, offload_optimizer: bool, offload_params: bool,
    checkpointing: bool, micro_batch: int, accumulation: int,
) -> JobSpec:
    data: dict[str, Any] = spec.model_dump()
    model = data["model"]
    if method == "full":
        model.update(lora=None, quantization=None)
    else:
        model["lora"] = model["lora"] or LoraSpec().model_dump()
        if method == "qlora":
            model["quantization"] = model["quantization"] or QuantizationSpec().model_dump()
        else:
            model["quantization"] = None
    model["gradient_checkpointing"] = checkpointing
    data["distribution"].update(
        num_workers=num_gpus, gpus_per_worker=1, zero_stage=zero_stage,
        offload_optimizer=offload_optimizer, offload_params=offload_params,
    )
    data["training"].update(batch_size=micro_batch, gradient_accumulation_steps=accumulation)
    return JobSpec.model_validate(data)


def _recommendation(spec: JobSpec, estimate: MemoryEstimate, reasons: list[str]) -> Recommendation:
    return Recommendation(
        method=estimate.method,
        zero_stage=estimate.zero_stage,
        offload_optimizer=estimate.offload_optimizer,
        offload_params=estimate.offload_params,
        gradient_checkpointing=estimate.gradient_checkpointing,
        micro_batch_size=estimate.micro_batch_size,
        gradient_accumulation_steps=spec.training.gradient_accumulation_steps,
        num_gpus=estimate.num_gpus,
        estimate=estimate,
        spec=spec,
        reasons=tuple(reasons),
    )


def _why(estimate: MemoryEstimate, gpu: GpuInfo) -> str:
    return f"{_describe(estimate)} fits: {_gib(estimate.total)} of {_gib(gpu.memory_bytes)} per GPU"


def _describe(estimate: MemoryEstimate) -> str:
    parts = [METHOD_LABELS[estimate.method]]
    parts.append(f"ZeRO-{estimate.zero_stage}" if estimate.zero_stage else "no ZeRO")
    if estimate.offload_optimizer:
        parts.append("optimizer offload")
    if estimate.offload_params:
        parts.append("parameter offload")
    parts.append("gradient checkpointing" if estimate.gradient_checkpointing else "no checkpointing")
    parts.append(f"micro-batch {estimate.micro_batch_size}")
    return ", ".join(parts)


def _gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"
