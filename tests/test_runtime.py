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
