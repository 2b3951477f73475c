"""4-bit linears dequantised in row blocks (modeling.chunked_4bit) compute bitsandbytes' linear (CPU)."""

from __future__ import annotations

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")


def _linear(rows: int, columns: int, seed: int):
    torch.manual_seed(seed)
    linear = bnb.nn.Linear4bit(columns, rows, bias=True, compute_dtype=torch.float32, quant_type="nf4")
    linear.weight = bnb.nn.Params4bit(torch.randn(rows, columns) * 0.05, requires_grad=False, quant_type="nf4",
                                      compress_statistics=True)
    linear.bias = torch.nn.Parameter(torch.randn(rows) * 0.1, requires_grad=False)
    linear.support_avx512bf16_for_cpu = False  # no inference repacking: this is the training path
    return linear.to("cpu")


@pytest.mark.parametrize(("rows", "columns"), [(384, 256), (1000, 128)])
def test_row_blocks_give_bitsandbytes_output_and_input_gradient(rows, columns):
    from alignment_core.modeling import chunked_4bit
    from alignment_core.modeling.chunked_4bit import chunk_4bit_linears, row_blocks

    linear = _linear(rows, columns, seed=rows)
    x = torch.randn(2, 7, columns, generator=torch.Generator().manual_seed(1), requires_grad=True)
    grad = torch.randn(2, 7, rows, generator=torch.Generator().manual_seed(2))
    expected = linear(x)
    expected.backward(grad)
    expected_grad = x.grad.clone()
    x.grad = None

    max_bytes = rows * columns * 4 // 3  # fp32 compute: three or four row blocks
    assert len(row_blocks(linear.weight.quant_state, max_bytes)) >= 3
    assert chunk_4bit_linears(linear, max_bytes=max_bytes) == 1
    calls = []
    function = chunked_4bit._ChunkedMatmul4bit
    original = function.apply
    function.apply = lambda *args: calls.append(1) or original(*args)
    try:
        out = linear(x)
    finally:
        function.apply = original
    assert calls, "the row-block path did not run"
    out.backward(grad)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)  # each block of outputs is its own matmul
    torch.testing.assert_close(x.grad, expected_grad, rtol=1e-5, atol=1e-6)  # partial sums in another order


def test_small_weights_stay_whole():
    from alignment_core.modeling.chunked_4bit import chunk_4bit_linears

    assert chunk_4bit_linears(_linear(64, 64, seed=0)) == 0
