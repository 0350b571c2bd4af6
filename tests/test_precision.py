"""The precision a job computes in: `auto` and the explicit values, on each kind of device.

The hardware is monkeypatched (a CPU with and without native bf16, a CUDA GPU with and without it),
so the rule is tested on whatever CPU runs the suite."""

from __future__ import annotations

import logging

import pytest
import torch

from opera.models import precision


@pytest.fixture
def hardware(monkeypatch):
    """Set what the CPU and a CUDA GPU support; the resolution cache is cleared around each test."""

    def set_hardware(*, cpu_bf16: bool, cuda_bf16: bool = False):
        monkeypatch.setattr(precision, "cpu_native_bf16", lambda: cpu_bf16)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: cuda_bf16)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a test GPU")
        precision._resolve.cache_clear()

    yield set_hardware
    precision._resolve.cache_clear()


@pytest.mark.parametrize(
    "requested, cpu_bf16, expected",
    [
        ("auto", False, "fp32"),
        ("auto", True, "bf16"),
        ("fp32", True, "fp32"),
        ("bf16", False, "bf16"),  # explicit: still runs, with a warning
        ("fp16", False, "fp32"),  # a GPU precision on a CPU resolves as auto
        ("fp16", True, "bf16"),
    ],
)
def test_cpu_resolution(hardware, requested, cpu_bf16, expected):
    hardware(cpu_bf16=cpu_bf16)
    assert precision.resolve(requested, "cpu") == expected


@pytest.mark.parametrize(
    "requested, cuda_bf16, expected",
    [("auto", True, "bf16"), ("auto", False, "fp32"), ("fp16", False, "fp16"), ("fp16", True, "fp16")],
)
def test_cuda_resolution(hardware, requested, cuda_bf16, expected):
    hardware(cpu_bf16=False, cuda_bf16=cuda_bf16)
    assert precision.resolve(requested, "cuda:0") == expected


def test_emulated_bf16_warns_once_naming_the_slowdown_and_the_setting(hardware, caplog):
    hardware(cpu_bf16=False)
    with caplog.at_level(logging.INFO, logger="opera.models.precision"):
        for _ in range(3):  # every batch of a job asks again
            precision.resolve("bf16", "cpu")
        precision.resolve("bf16", torch.device("cpu"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert precision.EMULATED_BF16_SLOWDOWN in warnings[0] and "encode_precision to auto" in warnings[0]
    resolved = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert resolved == ["precision bf16 resolves to bf16 on cpu (" + precision.cpu_description() + ")"]


def test_native_bf16_and_auto_do_not_warn(hardware, caplog):
    hardware(cpu_bf16=True)
    with caplog.at_level(logging.WARNING, logger="opera.models.precision"):
        precision.resolve("bf16", "cpu")
        precision.resolve("auto", "cpu")
    hardware(cpu_bf16=False)
    with caplog.at_level(logging.WARNING, logger="opera.models.precision"):
        precision.resolve("auto", "cpu")
    assert not caplog.records


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="one of auto, fp32, bf16, fp16, not 'fp8'"):
        precision.resolve("fp8", "cpu")


def test_autocast_follows_the_resolution(hardware):
    hardware(cpu_bf16=False)
    assert not isinstance(precision.autocast("cpu", "auto"), torch.autocast)
    hardware(cpu_bf16=True)
    with precision.autocast("cpu", "auto"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_this_cpu_is_described_as_pytorch_sees_it():
    description = precision.cpu_description()
    assert description.startswith(torch.backends.cpu.get_cpu_capability())
    assert description.endswith("native bf16")
