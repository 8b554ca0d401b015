"""Tests for DistributedDataParallel training: two CPU processes under torchrun on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _trainer_helpers import free_port, make_dataset
from dogbreeds import checkpoint, distributed

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_single_process_context_is_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = distributed.init_distributed(torch.device("cpu"))

    assert context == distributed.DistContext()
    assert context.is_main
    assert not context.enabled
    values = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_sum(context, values) is values
    assert distributed.any_process(context, True, torch.device("cpu")) is True
    assert distributed.broadcast_from_main(context, {"a": 1}) == {"a": 1}
    distributed.barrier(context)
    distributed.shutdown(context)


def test_invalid_world_size_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        distributed.init_distributed(torch.device("cpu"))


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    data_dir = make_dataset(tmp_path / "images")
    run_dir = tmp_path / "runs" / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        "-m", "dogbreeds.train", "--train_dir", str(data_dir), "--device", "cpu", "--arch", "resfcn18",
        "--image-size", "16", "--batch-size", "4", "--epochs", "2", "--workers", "0",
        "--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "--run-name", "ddp",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}

    finished = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)

    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output
    assert "Joined gloo process group as rank 0 of 2" in output
    # Rank 0 builds the cache before rank 1 reads it, and only rank 0 logs progress.
    assert output.count("Building image cache") == 1
    assert output.count("Run finished after epoch 2") == 1
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["ddp"]

    model, config = checkpoint.load_model(run_dir)
    assert config["world_size"] == 2
    assert config["metrics"]["epochs_completed"] == 2
    # The default learning rate scales with the global batch of 2 processes x 4 images.
    assert config["train_config"]["lr"] == pytest.approx(0.05 * 8 / 64)
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 3)

    history = json.loads((run_dir / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2]
    # 15 training images split into two shards of 7; the 3 validation images are counted once across ranks.
    assert history[0]["train_images"] == 14
    assert history[0]["val_images"] == 3


def test_existing_group_reads_local_world_size(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two machines with two processes each: the processes that share this machine's cores are 2, not 4.
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 3)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")

    context = distributed.init_distributed(torch.device("cpu"))

    assert context.world_size == 4
    assert context.local_rank == 1
    assert context.local_world_size == 2
    assert not context.owns_group


def test_existing_group_without_local_world_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 0)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 3)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)

    context = distributed.init_distributed(torch.device("cpu"))

    assert context.local_world_size == 3
