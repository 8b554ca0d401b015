"""Tests for dogbreeds.runtime: device selection, logging set-up and the glibc allocator tuning."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys

import pytest
import torch

from dogbreeds import runtime


@pytest.fixture
def no_accelerators(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the machine look like it has neither CUDA nor MPS, whatever it really has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)


def test_resolve_cpu() -> None:
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    assert runtime.resolve_device(" CPU ") == torch.device("cpu")


def test_auto_is_first_available() -> None:
    assert runtime.resolve_device("auto") == torch.device(runtime.available_devices()[0])


def test_auto_without_accelerators_is_cpu(no_accelerators: None) -> None:
    assert runtime.available_devices() == ["cpu"]
    assert runtime.resolve_device("auto") == torch.device("cpu")


def test_auto_prefers_cuda(two_gpus: None) -> None:
    assert runtime.available_devices() == ["cuda", "cuda:0", "cuda:1", "cpu"]
    assert runtime.resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "mps"])
def test_missing_device_raises(no_accelerators: None, name: str) -> None:
    with pytest.raises(ValueError) as caught:
        runtime.resolve_device(name)

    message = str(caught.value)
    assert repr(name) in message
    assert "not available" in message
    assert "available devices: cpu" in message
    assert "--device auto" in message


def test_cuda_index_out_of_range(two_gpus: None) -> None:
    assert runtime.resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match="cuda:2"):
        runtime.resolve_device("cuda:2")


@pytest.mark.parametrize("name", ["bogus", "cuda:x", "meta", ""])
def test_invalid_device_name(name: str) -> None:
    with pytest.raises(ValueError):
        runtime.resolve_device(name)


def test_real_cuda_request_on_cpu_machine() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")

    with pytest.raises(ValueError, match="'cuda' was requested but is not available"):
        runtime.resolve_device("cuda")


def test_setup_logging_adds_one_handler() -> None:
    package_logger = logging.getLogger("dogbreeds")
    runtime.setup_logging(logging.INFO)
    runtime.setup_logging(logging.DEBUG)

    ours = [handler for handler in package_logger.handlers if getattr(handler, "_dogbreeds", False)]
    assert len(ours) == 1
    assert package_logger.level == logging.DEBUG

    package_logger.removeHandler(ours[0])
    package_logger.propagate = True
    package_logger.setLevel(logging.NOTSET)


class _FakeLibc:
    """Stands in for glibc and records mallopt calls."""

    def __init__(self, result: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.result = result

        def mallopt(parameter: int, value: int) -> int:
            self.calls.append((parameter, value))
            return self.result

        self.mallopt = mallopt


def test_allocator_settings_values(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeLibc()
    monkeypatch.delenv(runtime.MALLOC_TUNING_ENV, raising=False)
    monkeypatch.setattr(runtime, "_load_glibc", lambda: fake)

    assert runtime.configure_allocator() is True
    assert (-4, 0) in fake.calls
    assert (-1, 2**31 - 1) in fake.calls


def test_allocator_disabled_by_env(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeLibc()
    monkeypatch.setenv(runtime.MALLOC_TUNING_ENV, "0")
    monkeypatch.setattr(runtime, "_load_glibc", lambda: fake)

    assert runtime.configure_allocator() is False
    assert fake.calls == []


def test_allocator_off_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runtime.MALLOC_TUNING_ENV, raising=False)
    monkeypatch.setattr(runtime, "_load_glibc", lambda: None)

    assert runtime.configure_allocator() is False


def test_allocator_rejected_value(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(runtime.MALLOC_TUNING_ENV, raising=False)
    monkeypatch.setattr(runtime, "_load_glibc", lambda: _FakeLibc(result=0))

    with caplog.at_level(logging.WARNING, logger="dogbreeds.runtime"):
        assert runtime.configure_allocator() is False
    assert "rejected" in caplog.text


def test_allocator_on_real_glibc() -> None:
    """Apply the settings in a fresh process, so this test process keeps its allocator defaults."""
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the C library is not glibc")

    code = ("import sys; from dogbreeds.runtime import configure_allocator; "
            "print(configure_allocator(), 'torch' in sys.modules)")
    env_off = {"DOGBREEDS_MALLOC_TUNING": "0"}

    tuned = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    untuned = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, **env_off})
    # The tuning runs before torch is imported, so it applies to every tensor allocation.
    assert tuned.stdout.split() == ["True", "False"]
    assert untuned.stdout.split() == ["False", "False"]


def _write_cpuinfo(path, flags: str):
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 {flags}\n\nprocessor\t: 1\n")
    return path


def test_amx_flag_read_from_cpuinfo(tmp_path) -> None:
    assert runtime.cpu_has_amx_bf16(_write_cpuinfo(tmp_path / "amx", "avx512f amx_tile amx_bf16 amx_int8"))
    assert not runtime.cpu_has_amx_bf16(_write_cpuinfo(tmp_path / "no-amx", "avx512f avx512_bf16 amx_tile"))
    assert not runtime.cpu_has_amx_bf16(tmp_path / "missing")


def test_fp32_precision_means_no_autocast() -> None:
    assert runtime.resolve_precision("fp32", torch.device("cpu")) is None
    with runtime.autocast(torch.device("cpu"), None):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.parametrize("amx", [True, False])
def test_auto_precision_on_cpu_follows_amx(monkeypatch: pytest.MonkeyPatch, amx: bool) -> None:
    monkeypatch.setattr(runtime, "cpu_has_amx_bf16", lambda: amx)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    expected = torch.bfloat16 if amx else None
    assert runtime.resolve_precision("auto", torch.device("cpu")) is expected


@pytest.mark.parametrize("bf16_supported", [True, False])
def test_auto_precision_follows_cuda_support(monkeypatch: pytest.MonkeyPatch, bf16_supported: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16_supported)
    expected = torch.bfloat16 if bf16_supported else None
    assert runtime.resolve_precision("auto", torch.device("cuda")) is expected


def test_auto_precision_on_mps_is_fp32() -> None:
    assert runtime.resolve_precision("auto", torch.device("mps")) is None


def test_bf16_without_support_names_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    with pytest.raises(ValueError, match=r"'bf16'.*'cpu'.*--precision fp32"):
        runtime.resolve_precision("bf16", torch.device("cpu"))
    with pytest.raises(ValueError, match=r"'bf16'.*'mps'.*--precision fp32"):
        runtime.resolve_precision("bf16", torch.device("mps"))


def test_bf16_without_amx_warns(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(runtime, "cpu_has_amx_bf16", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    with caplog.at_level(logging.WARNING, logger="dogbreeds.runtime"):
        assert runtime.resolve_precision("bf16", torch.device("cpu")) is torch.bfloat16
    assert "no AMX" in caplog.text


def test_unknown_precision_names_choices() -> None:
    with pytest.raises(ValueError, match=r"'fp16'.*auto, fp32, bf16"):
        runtime.resolve_precision("fp16", torch.device("cpu"))


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no bf16 instructions")
def test_bf16_autocast_runs_convolutions_in_bf16() -> None:
    conv = torch.nn.Conv2d(3, 4, 3)
    with runtime.autocast(torch.device("cpu"), torch.bfloat16):
        output = conv(torch.randn(2, 3, 8, 8))
    assert output.dtype == torch.bfloat16
    assert conv.weight.dtype == torch.float32
