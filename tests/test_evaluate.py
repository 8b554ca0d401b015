"""Tests for dogbreeds.evaluate: the validation split, separate folders, the report and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from _trainer_helpers import restore_package_logging  # noqa: F401 (autouse fixture)
from _trainer_helpers import CLASS_NAMES, make_dataset, tiny_config
from dogbreeds.evaluate import build_parser, evaluate, main, render_confusion_matrix, summarize_predictions
from dogbreeds.trainer import fit

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Return (run folder, training folder) of a 2-epoch resfcn18 run."""
    work = tmp_path_factory.mktemp("evaluate")
    data_dir = make_dataset(work / "images")
    result = fit(tiny_config(data_dir, work, epochs=2, batch_size=8, lr=0.05))
    return result.run_dir, data_dir


def test_training_folder_uses_validation_split(trained: tuple[Path, Path]) -> None:
    run_dir, data_dir = trained
    report = evaluate(run_dir, data_dir)

    assert report["source"] == "validation split"
    assert "validation split" in report["description"]
    assert report["num_images"] == 3
    assert np.asarray(report["confusion"]).sum() == 3
    assert np.asarray(report["confusion"]).shape == (3, 3)
    assert sum(row["images"] for row in report["per_class"]) == 3
    assert 0.0 <= report["top1"] <= report["top5"] <= 1.0
    assert report["class_keys"] == list(CLASS_NAMES)

    saved = json.loads((run_dir / "evaluation.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert (run_dir / "confusion_matrix.png").read_bytes().startswith(PNG_SIGNATURE)


def test_matches_training_accuracy(trained: tuple[Path, Path]) -> None:
    run_dir, data_dir = trained
    history = json.loads((run_dir / "history.json").read_text())
    best = max(history, key=lambda entry: entry["val_top1"])

    report = evaluate(run_dir, data_dir)

    assert report["top1"] == pytest.approx(best["val_top1"])
    assert report["loss"] == pytest.approx(best["val_loss"], rel=1e-4)


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no bf16 instructions")
def test_bf16_evaluation_is_close_to_fp32(trained: tuple[Path, Path]) -> None:
    run_dir, data_dir = trained

    fp32 = evaluate(run_dir, data_dir, precision="fp32")
    bf16 = evaluate(run_dir, data_dir, precision="bf16")

    # bf16 keeps 8 bits of mantissa, so the loss moves slightly while the predictions of this tiny set agree.
    assert bf16["loss"] == pytest.approx(fp32["loss"], rel=0.05)
    assert bf16["loss"] != fp32["loss"]
    assert bf16["top1"] == pytest.approx(fp32["top1"], abs=0.2)


def test_unknown_precision_raises(trained: tuple[Path, Path]) -> None:
    run_dir, data_dir = trained
    with pytest.raises(ValueError, match="Unknown precision 'fp16'"):
        evaluate(run_dir, data_dir, precision="fp16")


def test_separate_folder_maps_by_name(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, _ = trained
    # Two of the three breeds, and a file that does not decode.
    folder = make_dataset(tmp_path / "test", images_per_class=4, classes=CLASS_NAMES[1:])
    (folder / CLASS_NAMES[1] / "broken.jpg").write_bytes(b"not a jpeg")

    report = evaluate(run_dir, folder)

    assert report["source"] == "folder"
    assert report["num_images"] == 8
    assert np.asarray(report["confusion"]).sum() == 8
    per_class = {row["class_key"]: row for row in report["per_class"]}
    assert per_class[CLASS_NAMES[0]]["images"] == 0
    assert per_class[CLASS_NAMES[0]]["accuracy"] is None
    assert per_class[CLASS_NAMES[1]]["images"] == 4
    assert per_class[CLASS_NAMES[2]]["images"] == 4
    assert all("broken" not in item["path"] for item in report["worst_files"])


def test_unknown_class_in_folder_raises(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, _ = trained
    folder = make_dataset(tmp_path / "test", images_per_class=2, classes=(CLASS_NAMES[0], "n0999-Unknown_dog"))

    with pytest.raises(ValueError, match="n0999-Unknown_dog"):
        evaluate(run_dir, folder)


def test_max_images_samples(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, _ = trained
    folder = make_dataset(tmp_path / "test", images_per_class=4)

    report = evaluate(run_dir, folder, max_images=6, batch_size=4)

    assert report["num_images"] == 6
    assert [row["images"] for row in report["per_class"]] == [2, 2, 2]


def test_summary_of_known_predictions() -> None:
    # Predictions: class 0 right, class 0 taken for 1, class 1 right, class 2 taken for 0 (confidently).
    logits = torch.tensor([
        [4.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 3.0, 0.0],
        [5.0, 0.0, 0.0],
    ])
    labels = torch.tensor([0, 0, 1, 2])
    paths = [Path(f"img{i}.jpg") for i in range(4)]

    report = summarize_predictions(logits, labels, paths, ["k0", "k1", "k2"], ["A", "B", "C"])

    assert report["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert report["top1"] == 0.5
    assert report["top5"] == 1.0
    assert [row["accuracy"] for row in report["per_class"]] == [0.5, 1.0, 0.0]
    assert [(pair["true"], pair["predicted"], pair["count"]) for pair in report["most_confused"]] == [
        ("A", "B", 1), ("C", "A", 1),
    ]
    assert report["most_confused"][0]["fraction_of_true"] == 0.5
    worst = report["worst_files"]
    assert [item["path"] for item in worst] == ["img3.jpg", "img1.jpg"]
    assert (worst[0]["true"], worst[0]["predicted"]) == ("C", "A")
    assert worst[0]["loss"] > worst[1]["loss"]
    assert worst[0]["predicted_probability"] > 0.9


@pytest.mark.parametrize("num_classes", [3, 40, 120])
def test_confusion_png_renders(num_classes: int) -> None:
    matrix = np.eye(num_classes, dtype=np.int64) * 5
    matrix[0, 1] = 2
    image = render_confusion_matrix(matrix, [f"breed {i}" for i in range(num_classes)], "title")

    assert image.startswith(PNG_SIGNATURE)


def test_cli_prints_report(trained: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    run_dir, data_dir = trained
    code = main([str(run_dir), str(data_dir), "--batch-size", "2"])

    captured = capsys.readouterr()
    out = captured.out
    assert code == 0
    assert "validation split" in out
    assert "top-1" in out
    assert "Saved evaluation.json and confusion_matrix.png" in out
    assert "Wrote evaluation.json" not in captured.out + captured.err


def test_cli_missing_run_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main([str(tmp_path / "no-run"), str(tmp_path)])

    err = capsys.readouterr().err
    assert code == 2
    assert "no-run" in err
    assert "Traceback" not in err
    assert "comes first" not in err


def test_cli_swapped_arguments_hint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data_dir = make_dataset(tmp_path / "images")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")

    for argv in ([str(data_dir), str(run_dir)], [str(data_dir), str(tmp_path / "elsewhere")]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2
        assert "config.json" in err
        assert "The run folder comes first: python -m dogbreeds.evaluate RUN_DIR DATA_DIR" in err


def test_cli_options_accept_both_spellings() -> None:
    underscore = build_parser().parse_args(["run", "data", "--batch_size", "8", "--max_images", "5"])
    kebab = build_parser().parse_args(["run", "data", "--batch-size", "8", "--max-images", "5"])

    assert vars(underscore) == vars(kebab)
    assert underscore.batch_size == 8
    assert underscore.max_images == 5
