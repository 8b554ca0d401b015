"""Tests for dogbreeds.compare: one tiny comparison of the three architectures, reuse and option errors."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
from pathlib import Path

import pytest

from _trainer_helpers import restore_package_logging  # noqa: F401 (autouse fixture)
from _trainer_helpers import make_dataset
from dogbreeds.compare import find_matching_run, format_csv, format_markdown, main
from dogbreeds.config import TrainConfig
from dogbreeds.models import MODEL_NAMES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _args(data_dir: Path, work: Path) -> list[str]:
    return [str(data_dir), "--epochs", "1", "--image-size", "32", "--batch-size", "8", "--device", "cpu",
            "--workers", "0", "--out", str(work / "runs"), "--cache-dir", str(work / "cache"),
            "--latency-images", "2"]


def _read_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Run one comparison of all three architectures; return (data folder, work folder)."""
    work = tmp_path_factory.mktemp("compare")
    data_dir = make_dataset(work / "images")
    assert main(_args(data_dir, work)) == 0
    return data_dir, work


@pytest.mark.slow
def test_writes_table_and_curves(compared: tuple[Path, Path]) -> None:
    _, work = compared
    runs = work / "runs"

    rows = _read_rows(runs / "comparison.csv")
    assert [row["architecture"] for row in rows] == list(MODEL_NAMES)
    for row in rows:
        assert int(row["parameters"]) > 0
        assert int(row["flops_per_image"]) > 0
        assert row["image_size"] == "32"
        assert row["epochs"] == "1"
        assert 0.0 <= float(row["best_top1"]) <= float(row["best_top5"]) <= 1.0
        assert float(row["latency_ms"]) > 0
        assert float(row["images_per_s"]) > 0
        assert row["reused"] == "False"
        assert Path(row["run_dir"]).is_dir()

    markdown = (runs / "comparison.md").read_text()
    assert markdown.splitlines()[0].startswith("| Architecture | Family | Parameters")
    for name in MODEL_NAMES:
        assert f"| {name} |" in markdown
    assert (runs / "comparison_curves.png").read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.slow
def test_second_run_reuses(compared: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    data_dir, work = compared
    run_folders = sorted(path.name for path in (work / "runs").iterdir() if path.is_dir())

    assert main([*_args(data_dir, work), "--arch", "resfcn18", "custom_cnn"]) == 0

    rows = _read_rows(work / "runs" / "comparison.csv")
    assert [row["architecture"] for row in rows] == ["resfcn18", "custom_cnn"]
    assert [row["reused"] for row in rows] == ["True", "True"]
    assert sorted(path.name for path in (work / "runs").iterdir() if path.is_dir()) == run_folders
    assert "(reused)" in capsys.readouterr().out


@pytest.mark.slow
def test_matching_needs_same_settings(compared: tuple[Path, Path], tmp_path: Path) -> None:
    data_dir, work = compared
    config = TrainConfig(train_dir=data_dir, arch="resfcn18", image_size=32, epochs=1, batch_size=8, device="cpu",
                         workers=0, out=work / "runs", cache_dir=work / "cache").resolved()

    found = find_matching_run(config.out, config)
    assert found is not None
    assert found.name.startswith("resfcn18-")
    assert find_matching_run(config.out, dataclasses.replace(config, epochs=2)) is None
    assert find_matching_run(config.out, dataclasses.replace(config, seed=1)) is None
    assert find_matching_run(config.out, dataclasses.replace(config, train_dir=tmp_path)) is None

    # A run that did not finish (stopped or killed) is never reused.
    unfinished = tmp_path / "runs"
    shutil.copytree(found, unfinished / found.name)
    config_path = unfinished / found.name / "config.json"
    saved = json.loads(config_path.read_text())
    saved["metrics"]["finished"] = False
    config_path.write_text(json.dumps(saved))
    assert find_matching_run(unfinished, dataclasses.replace(config, out=unfinished)) is None


def test_invalid_size_for_one_arch_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as caught:
        main([str(tmp_path), "--image-size", "36"])

    assert caught.value.code == 2
    assert "resfcn18: resfcn18 needs image_size to be a multiple of 8" in capsys.readouterr().err


def test_unknown_arch_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as caught:
        main([str(tmp_path), "--arch", "vgg16"])

    assert caught.value.code == 2
    assert "invalid choice: 'vgg16'" in capsys.readouterr().err


def test_missing_data_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main([str(tmp_path / "nothing"), "--epochs", "1", "--out", str(tmp_path / "runs")])

    err = capsys.readouterr().err
    assert code == 1
    assert "nothing" in err
    assert "Traceback" not in err


def test_table_formats() -> None:
    row = {
        "architecture": "custom_cnn", "family": "cnn", "parameters": 1_700_000, "flops_per_image": 2_500_000_000,
        "image_size": 64, "epochs": 3, "best_epoch": 2, "best_top1": 0.4567, "best_top5": 0.8, "train_seconds": 12.4,
        "images_per_s": 93.25, "latency_ms": None, "reused": True, "run_dir": "/runs/custom_cnn-1", "history": [],
    }

    markdown = format_markdown([row])
    assert "| custom_cnn | cnn | 1.70 M | 2.50 G | 64 | 3 | 45.67% | 80.00% | 12 | 93.2 | n/a |" in markdown
    assert "`custom_cnn-1` (reused)" in markdown

    rows = list(csv.DictReader(io.StringIO(format_csv([row]))))
    assert rows[0]["best_top1"] == "0.4567"
    assert rows[0]["latency_ms"] == ""
    assert "history" not in rows[0]
