"""The CPU matmul choice behind every projection: oneDNN for float32 inference, F.linear otherwise.
It must give F.linear's results (to rounding), take oneDNN only where that is safe, and be
switchable."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import harness
from harness.errors import ConfigError
from harness.models.linear import Linear, cpu_matmul, linear, set_cpu_matmul, using_cpu_matmul
from tests.harness.hf_tiny import build

ONEDNN_OP = "mkldnn::_linear_pointwise"


def ops_run(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {event.name for event in prof.events()}


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=1e-5 * max(1.0, b.abs().amax().item() if b.numel() else 0))


@pytest.mark.parametrize(
    "x",
    [torch.randn(7, 32), torch.randn(2, 5, 32), torch.randn(5, 64)[:, :32], torch.randn(32, 6).T, torch.randn(0, 32)],
    ids=["2d", "3d", "strided", "transposed", "empty"],
)
@pytest.mark.parametrize("with_bias", [False, True])
def test_float32_inference_takes_onednn_and_matches_f_linear(x, with_bias):
    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(48, 32, generator=g), torch.randn(48, generator=g) if with_bias else None
    assert cpu_matmul() == "onednn"
    assert ONEDNN_OP in ops_run(lambda: linear(x, weight, bias))
    assert close(linear(x, weight, bias), F.linear(x, weight, bias))


def test_anything_needing_gradients_runs_f_linear_and_gets_them():
    layer = Linear(16, 8)
    x = torch.randn(4, 16, requires_grad=True)
    assert ONEDNN_OP not in ops_run(lambda: layer(x))
    layer(x).square().sum().backward()
    expected_x, expected_w = torch.autograd.grad(F.linear(x, layer.weight, layer.bias).square().sum(), (x, layer.weight))
    assert torch.allclose(x.grad, expected_x) and torch.allclose(layer.weight.grad, expected_w)
    with torch.no_grad():  # the same layer at inference is free to take oneDNN
        assert ONEDNN_OP in ops_run(lambda: layer(x))


def test_other_dtypes_and_autocast_run_f_linear():
    weight = torch.randn(8, 16)
    x = torch.randn(3, 16)
    assert ONEDNN_OP not in ops_run(lambda: linear(x.bfloat16(), weight.bfloat16()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = linear(x, weight)
        assert ONEDNN_OP not in ops_run(lambda: linear(x, weight))
    assert out.dtype == torch.bfloat16  # autocast applied, as it would be to nn.Linear


def test_aten_backend_is_f_linear_exactly_and_the_switch_is_restored():
    weight, x = torch.randn(8, 16), torch.randn(3, 16)
    with using_cpu_matmul("aten"):
        assert cpu_matmul() == "aten"
        assert ONEDNN_OP not in ops_run(lambda: linear(x, weight))
        assert torch.equal(linear(x, weight), F.linear(x, weight))
    assert cpu_matmul() == "onednn"
    with pytest.raises(ConfigError, match="onednn"):
        set_cpu_matmul("blas")


def test_the_environment_variable_chooses_the_backend():
    def backend(value: str) -> str:
        env = {**os.environ, "INTERP_HARNESS_CPU_MATMUL": value}
        code = "from harness.models.linear import cpu_matmul; print(cpu_matmul())"
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        return done.stdout.strip() + ("|warned" if "INTERP_HARNESS_CPU_MATMUL" in done.stderr else "")

    assert backend("aten") == "aten"
    assert backend("onednn") == "onednn"
    assert backend("cublas") == "onednn|warned"  # an unknown value is named, and the default kept


def test_a_whole_model_agrees_across_backends_and_stays_an_nn_linear_model():
    model = harness.load(build("llama-gqa3-llama3rope"))
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert ONEDNN_OP in ops_run(lambda: model(tokens))
        fast = model(tokens)
        with using_cpu_matmul("aten"):
            plain = model(tokens)
    assert close(fast, plain)
    # peft, steering and LoRA target discovery look for nn.Linear.
    assert isinstance(model.blocks[0].attn.q_proj, torch.nn.Linear)


def test_moe_experts_loop_through_onednn_at_inference_and_group_otherwise():
    from tests.harness.hf_tiny_moe import build as build_moe

    model = harness.load(build_moe("mixtral-7experts-top3"))
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fast = ops_run(lambda: model(tokens))
        with using_cpu_matmul("aten"):
            plain = ops_run(lambda: model(tokens))
    assert ONEDNN_OP in fast and "aten::_grouped_mm" not in fast
    assert ONEDNN_OP not in plain and "aten::_grouped_mm" in plain
    assert "aten::_grouped_mm" in ops_run(lambda: model(tokens))  # training: gradients, so grouped
