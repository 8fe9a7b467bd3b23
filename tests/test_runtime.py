import pytest
import torch

from speechlm import runtime


def test_cpu_runtime_and_dtype_table():
    rt = runtime.make_runtime("cpu", "bf16")
    assert rt.device.type == "cpu" and rt.dtype == torch.bfloat16 and rt.autocast_enabled
    with runtime.autocast(rt):
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16
    assert not runtime.make_runtime("cpu", "fp32").autocast_enabled


def test_bad_device_and_dtype_are_errors():
    with pytest.raises(ValueError, match="unknown dtype"):
        runtime.make_runtime("cpu", "fp8")
    with pytest.raises(ValueError, match="fp16 autocast is not supported on CPU"):
        runtime.make_runtime("cpu", "fp16")
    with pytest.raises(ValueError, match="unknown device"):
        runtime.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            runtime.resolve_device("cuda")


def test_seeding_is_reproducible():
    runtime.seed_everything(3)
    a = torch.randn(5)
    runtime.seed_everything(3)
    assert torch.equal(a, torch.randn(5))
    with pytest.raises(ValueError):
        runtime.seed_everything(-1)
