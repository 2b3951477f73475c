"""4-bit linears that dequantise a large weight a block of rows at a time, not all at once.

bitsandbytes computes a 4-bit linear by dequantising the whole weight to the compute dtype and then running one
matmul. The forward does that, and the backward does it again. For a 7.24B Llama MLP weight (14336 x 4096) the
bf16 copy is 117 MB, the largest transient in a QLoRA layer. With layers replayed as CUDA graphs it sets the size
of the graph pool (0.29-0.31 GiB, docs/benchmarks.md runs O-R). Here the rows are dequantised `max_bytes` at a
time. The forward output is the same: each block of output features is its own matmul. The input gradient adds
the blocks' partial products in float32. The packed data and the block scales are sliced, not copied: rows start
on quantisation-block boundaries when the row length is a multiple of the block size.
"""

from __future__ import annotations

import math
import types
from typing import Any

import torch
from torch import nn

DEFAULT_MAX_BYTES = 32 * 2**20


def _absmax(state: Any) -> torch.Tensor:
    """The float32 scale of every quantisation block (double quantisation undone)."""
    if not state.nested:
        return state.absmax.float()
    from bitsandbytes.functional import dequantize_blockwise

    absmax = dequantize_blockwise(state.absmax, state.state2)
    absmax += state.offset
    return absmax.float()


def _rows(packed: torch.Tensor, absmax: torch.Tensor, state: Any, start: int, stop: int) -> torch.Tensor:
    columns = state.shape[1]
    data = packed.view(-1)[start * columns // 2: stop * columns // 2]
    scales = absmax[start * columns // state.blocksize: stop * columns // state.blocksize]
    return torch.ops.bitsandbytes.dequantize_4bit(
        data, scales, state.blocksize, state.quant_type, [stop - start, columns], state.dtype
    )


class _ChunkedMatmul4bit(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, packed: torch.Tensor, state: Any, bounds: list[tuple[int, int]]):
        ctx.state, ctx.bounds = state, bounds
        ctx.save_for_backward(packed)
        absmax = _absmax(state)
        parts = [torch.matmul(x, _rows(packed, absmax, state, start, stop).to(x.dtype).t())
                 for start, stop in bounds]
        return torch.cat(parts, dim=-1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        (packed,) = ctx.saved_tensors
        absmax = _absmax(ctx.state)
        total = None
        for start, stop in ctx.bounds:
            part = torch.matmul(grad[..., start:stop], _rows(packed, absmax, ctx.state, start, stop).to(grad.dtype))
            total = part.float() if total is None else total.add_(part)
        return total.to(grad.dtype), None, None, None


def row_blocks(state: Any, max_bytes: int) -> list[tuple[int, int]] | None:
    """Row ranges whose dequantised size is at most `max_bytes`, each starting on a quantisation block; None when
    one block suffices or the rows cannot be cut on block boundaries."""
    rows, columns = state.shape
    element = torch.empty((), dtype=state.dtype).element_size()
    if rows * columns * element <= max_bytes or columns % state.blocksize != 0:
        return None
    count = math.ceil(rows * columns * element / max_bytes)
    step = math.ceil(rows / count)
    return [(start, min(rows, start + step)) for start in range(0, rows, step)]


def _chunked_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    from bitsandbytes.nn.modules import fix_4bit_weight_quant_state_from_module

    fix_4bit_weight_quant_state_from_module(self)
    state = self.weight.quant_state
    bounds = row_blocks(state, self._alignd_max_bytes)
    if bounds is None or getattr(state, "packing_format_for_cpu", False):
        return self._alignd_plain_forward(x)
    if not self.compute_type_is_set:
        self.set_compute_type(x)
        self.compute_type_is_set = True
    dtype = x.dtype
    if self.compute_dtype is not None:
        x = x.to(self.compute_dtype)
    out = _ChunkedMatmul4bit.apply(x, self.weight, state, bounds)
    if self.bias is not None:
        out = out + self.bias.to(out.dtype)
    return out.to(dtype)


def chunk_4bit_linears(model: nn.Module, max_bytes: int | None = None) -> int:
    """Make every 4-bit linear of `model` whose dequantised weight exceeds `max_bytes` (DEFAULT_MAX_BYTES)
    dequantise in row blocks. Returns how many linears changed."""
    max_bytes = max_bytes or DEFAULT_MAX_BYTES
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return 0
    changed = 0
    for module in model.modules():
        if not isinstance(module, Linear4bit) or getattr(module, "_alignd_max_bytes", None) is not None:
            continue
        state = getattr(module.weight, "quant_state", None)
        if state is None or row_blocks(state, max_bytes) is None:
            continue
        module._alignd_max_bytes = max_bytes
        module._alignd_plain_forward = module.forward
        module.forward = types.MethodType(_chunked_forward, module)
        changed += 1
    return changed
