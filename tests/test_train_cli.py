"""Tests for the training command line: option spellings, invalid values, exit codes, resume and SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _trainer_helpers import restore_package_logging  # noqa: F401 (autouse fixture)
from _trainer_helpers import make_dataset
from dogbreeds import checkpoint
from dogbreeds.config import TrainConfig
from dogbreeds.train import main, parse_config

REPO_ROOT = Path(__file__).resolve().parents[1]

# (underscore spelling, kebab spelling, value) for every option whose name has more than one word.
TWO_SPELLINGS = [
    ("--train_dir", "--train-dir", "data/dogs"),
    ("--test_dir", "--test-dir", "data/test"),
    ("--val_fraction", "--val-fraction", "0.3"),
    ("--split_lists", "--split-lists", "lists"),
    ("--max_images", "--max-images", "50"),
    ("--image_size", "--image-size", "48"),
    ("--no_cache", "--no-cache", None),
    ("--cache_dir", "--cache-dir", "cache"),
    ("--min_scale", "--min-scale", "0.5"),
    ("--no_flip", "--no-flip", None),
    ("--batch_size", "--batch-size", "16"),
    ("--weight_decay", "--weight-decay", "0.001"),
    ("--warmup_epochs", "--warmup-epochs", "2"),
    ("--label_smoothing", "--label-smoothing", "0.1"),
    ("--run_name", "--run-name", "first"),
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "images")


def _tiny_args(data_dir: Path, work_dir: Path) -> list[str]:
    return ["--train_dir", str(data_dir), "--device", "cpu", "--arch", "resfcn18", "--image-size", "16",
            "--batch-size", "4", "--epochs", "1", "--workers", "0", "--out", str(work_dir / "runs"),
            "--cache-dir", str(work_dir / "cache")]


@pytest.mark.parametrize(("underscore", "kebab", "value"), TWO_SPELLINGS)
def test_both_spellings_parse_alike(underscore: str, kebab: str, value: str | None) -> None:
    tail = [] if value is None else [value]
    first, _ = parse_config([underscore, *tail])
    second, _ = parse_config([kebab, *tail])

    assert first == second
    assert first != TrainConfig()


def test_full_command_line() -> None:
    config, _ = parse_config([
        "--train_dir", "./images/images", "--test_dir", "./images/images", "--device", "cpu", "--arch", "resfcn18",
        "--epochs", "3", "--batch-size", "32", "--lr", "0.01", "--image-size", "32", "--workers", "2",
        "--out", "runs", "--seed", "7", "--patience", "2", "--optimizer", "adamw", "--label-smoothing", "0.1",
        "--min-scale", "0.5", "--no-flip", "--no-cache", "--max-images", "100", "--val-fraction", "0.25",
    ])

    assert config == TrainConfig(
        train_dir=Path("images/images"), test_dir=Path("images/images"), device="cpu", arch="resfcn18", epochs=3,
        batch_size=32, lr=0.01, image_size=32, workers=2, out=Path("runs"), seed=7, patience=2,
        optimizer="adamw", label_smoothing=0.1, min_scale=0.5, hflip=False, use_cache=False, max_images=100,
        val_fraction=0.25,
    )


def test_no_options_give_defaults() -> None:
    config, namespace = parse_config([])

    assert config == TrainConfig()
    assert namespace.verbose is False


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--epochs", "-1"], "Epochs must be at least 1, got -1"),
        (["--epochs", "two"], "invalid int value: 'two'"),
        (["--val-fraction", "0"], "Validation fraction must be between 0 and 1"),
        (["--val_fraction", "1.5"], "got 1.5"),
        (["--arch", "resfcn18", "--image-size", "20"], "multiple of 8"),
        (["--arch", "custom_cnn", "--image_size", "16"], "custom_cnn needs image_size >= 32"),
        (["--arch", "vgg16"], "invalid choice: 'vgg16'"),
        (["--lr", "-0.1"], "Learning rate must be a positive number"),
        (["--batch-size", "1"], "Batch size must be at least 2"),
        (["--patience", "0"], "Patience must be at least 1"),
        (["--optimizer", "adam"], "invalid choice: 'adam'"),
        (["--label-smoothing", "1"], "Label smoothing"),
        (["--min-scale", "0"], "Minimum crop scale"),
        (["--precision", "fp16"], "invalid choice: 'fp16'"),
    ],
)
def test_invalid_values_exit_2(argv: list[str], expected: str, capsys: pytest.CaptureFixture,
                               tmp_path: Path) -> None:
    missing_data = ["--train_dir", str(tmp_path / "never-read")]
    with pytest.raises(SystemExit) as caught:
        main([*missing_data, *argv])

    assert caught.value.code == 2
    assert expected in capsys.readouterr().err


def test_missing_resume_folder_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--resume", str(tmp_path / "gone")])

    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--resume folder" in err
    assert str(tmp_path / "gone") in err


def test_resume_folder_without_config_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--resume", str(tmp_path)])

    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "config.json does not exist." in err
    assert ".)." not in err
    assert "Pass the folder of an earlier run" in err


def test_resume_without_epochs_left_exit_2(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert main([*_tiny_args(data_dir, tmp_path), "--epochs", "2", "--run-name", "r"]) == 0
    capsys.readouterr()

    def fail_prepare(*args, **kwargs):
        raise AssertionError("prepare_data must not run")

    monkeypatch.setattr("dogbreeds.data.prepare_data", fail_prepare)
    with pytest.raises(SystemExit) as caught:
        main(["--resume", str(tmp_path / "runs" / "r"), "--epochs", "1"])

    assert caught.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "already completed 2 epochs; --epochs 1 leaves nothing to train" in err
    assert "Set --epochs to 3 or more" in err


def test_diverged_training_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from dogbreeds import trainer

    def diverge(*args, **kwargs):
        raise trainer.TrainingDivergedError("Training diverged: the loss became nan in epoch 2.")

    monkeypatch.setattr(trainer, "fit", diverge)
    code = main(["--train_dir", str(tmp_path), "--device", "cpu"])

    err = capsys.readouterr().err
    assert code == 1
    assert "error: Training diverged" in err
    assert "Traceback" not in err


def test_help_names_units_and_defaults(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--help"])

    assert caught.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--batch-size N, --batch_size N" not in text
    assert "--batch_size N, --batch-size N" in text
    assert "in pixels" in text
    assert "(default: 10)" in text
    assert "custom_cnn 64, resnet18 128, resfcn18 64" in text
    assert "{custom_cnn,resnet18,resfcn18}" in text


@pytest.mark.parametrize("layout", ["missing", "empty", "one_class"])
def test_data_folder_errors_exit_1(layout: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "images"
    if layout == "empty":
        folder.mkdir()
    elif layout == "one_class":
        make_dataset(folder, classes=("n1-Only",))

    code = main(_tiny_args(folder, tmp_path))

    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") or "\nerror: " in err
    assert str(folder) in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_report_command_trains(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # The folder given as both --train_dir and --test_dir is split into training and validation images.
    code = main([*_tiny_args(data_dir, tmp_path), "--test_dir", str(data_dir), "--run_name", "report"])

    out = capsys.readouterr().out
    run_dir = tmp_path / "runs" / "report"
    assert code == 0
    assert "Run finished after epoch 1" in out
    assert str(run_dir) in out
    checkpoint.load_model(run_dir)
    history = json.loads((run_dir / "history.json").read_text())
    assert history[0]["val_images"] == 3


def test_cli_resume_continues(data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert main([*_tiny_args(data_dir, tmp_path), "--run-name", "r"]) == 0
    run_dir = tmp_path / "runs" / "r"

    code = main(["--resume", str(run_dir), "--epochs", "2", "--arch", "custom_cnn", "--workers", "0",
                 "--cache-dir", str(tmp_path / "cache")])

    assert code == 0
    history = json.loads((run_dir / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2]
    assert checkpoint.read_run_config(run_dir)["architecture"] == "resfcn18"


SLOW_TRAINING = textwrap.dedent(
    """
    import sys
    import time

    from dogbreeds import data

    original_iter = data.BatchLoader.__iter__

    def slow_iter(self):
        # Print a marker per training batch and slow training down so the test can kill it mid-epoch.
        for batch in original_iter(self):
            if self.train:
                print(f"BATCH {self.epoch}", flush=True)
                time.sleep(0.15)
            yield batch

    data.BatchLoader.__iter__ = slow_iter

    from dogbreeds.train import main

    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(data_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "slow_train.py"
    script.write_text(SLOW_TRAINING)
    args = [*_tiny_args(data_dir, tmp_path), "--epochs", "3", "--run-name", "killed"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    run_dir = tmp_path / "runs" / "killed"

    process = subprocess.Popen([sys.executable, str(script), *args], cwd=tmp_path, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    epoch_two_batches = 0
    try:
        for line in process.stdout:
            # Epoch 2's loader starts only after epoch 1 is saved, so its second batch is mid-epoch.
            if line.strip() == "BATCH 2":
                epoch_two_batches += 1
            if epoch_two_batches == 2:
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.kill()
        process.wait(timeout=30)

    assert epoch_two_batches == 2, "training ended before the second batch of epoch 2"
    assert process.returncode == -signal.SIGKILL

    model, config = checkpoint.load_model(run_dir)
    assert config["metrics"]["epochs_completed"] == 1
    history = json.loads((run_dir / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1]
    assert not [path.name for path in run_dir.iterdir() if path.name.endswith(".tmp")]

    resumed = subprocess.run(
        [sys.executable, "-m", "dogbreeds.train", "--resume", str(run_dir), "--workers", "0",
         "--cache-dir", str(tmp_path / "cache")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "epochs 2-3" in resumed.stderr
    history = json.loads((run_dir / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2, 3]
    assert checkpoint.read_run_config(run_dir)["metrics"]["epochs_completed"] == 3
