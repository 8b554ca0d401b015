"""Tests for Predictor and the `python -m dogbreeds.predict` command line."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dogbreeds import transforms
from dogbreeds.checkpoint import CONFIG_FILE, CheckpointError, load_model
from dogbreeds.decode import ImageDecodeError
from dogbreeds.predict import Predictor, main

from _models_helpers import CLASS_KEYS, CLASS_NAMES, make_run

REPO_ROOT = Path(__file__).resolve().parents[1]


def _photo(height=30, width=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def fcn_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("resfcn18-run")
    make_run(run_dir, "resfcn18", 16)
    return run_dir


@pytest.fixture(scope="module")
def predictor(fcn_run):
    return Predictor.from_run(fcn_run)


def _check_top(top, k):
    assert len(top) == k
    assert set(top) <= set(CLASS_NAMES)
    assert all(type(probability) is float for probability in top.values())
    assert all(0.0 <= probability <= 1.0 for probability in top.values())
    assert sum(top.values()) <= 1.0 + 1e-6
    assert list(top.values()) == sorted(top.values(), reverse=True)


def test_predictor_attributes(predictor, fcn_run):
    assert predictor.architecture == "resfcn18"
    assert predictor.family == "fcn"
    assert predictor.image_size == 16
    assert predictor.class_names == list(CLASS_NAMES)
    assert predictor.num_parameters > 0
    assert predictor.run_dir == fcn_run
    assert not predictor.model.training


def test_predict_path(predictor, tmp_path):
    path = tmp_path / "dog.png"
    Image.fromarray(_photo()).save(path)

    _check_top(predictor.predict(path, k=2), 2)
    _check_top(predictor.predict(str(path), k=2), 2)


@pytest.mark.parametrize(
    "make_image",
    [
        pytest.param(lambda: Image.fromarray(_photo()).convert("L"), id="pil-L"),
        pytest.param(lambda: Image.fromarray(_photo()).convert("RGBA"), id="pil-RGBA"),
        pytest.param(lambda: Image.fromarray(_photo()).convert("P"), id="pil-P"),
        pytest.param(lambda: _photo()[:, :, 0], id="numpy-HxW"),
        pytest.param(lambda: _photo()[:, :, :1], id="numpy-HxWx1"),
        pytest.param(lambda: _photo(), id="numpy-HxWx3"),
        pytest.param(lambda: np.dstack([_photo(), np.full((30, 40), 255, np.uint8)]), id="numpy-HxWx4"),
    ],
)
def test_predict_image_kinds(predictor, make_image):
    _check_top(predictor.predict(make_image(), k=3), 3)


def test_predict_matches_eval_preprocessing(predictor, fcn_run, tmp_path):
    path = tmp_path / "dog.png"
    Image.fromarray(_photo(seed=3)).save(path)
    model, _ = load_model(fcn_run)

    with torch.inference_mode():
        logits = model(transforms.preprocess_eval(path, 16).unsqueeze(0))
    probabilities = torch.softmax(logits, dim=1)[0]
    expected = {CLASS_NAMES[index]: float(probabilities[index]) for index in probabilities.argsort(descending=True)}

    assert predictor.predict(path, k=3) == expected


def test_same_image_any_source(predictor, tmp_path):
    pixels = _photo(seed=4)
    path = tmp_path / "dog.png"
    Image.fromarray(pixels).save(path)

    from_path = predictor.predict(path)
    assert predictor.predict(Image.open(path)) == from_path
    assert predictor.predict(pixels) == from_path
    assert predictor.predict(path.read_bytes()) == from_path


def test_predict_deterministic(predictor):
    image = _photo(seed=5)
    assert predictor.predict(image) == predictor.predict(image)


def test_predict_eval_and_inference_mode(predictor):
    seen = []

    def record(module, inputs, output):
        seen.append((module.training, torch.is_inference_mode_enabled(), inputs[0].shape[0]))

    predictor.model.train()
    handle = predictor.model.register_forward_hook(record)
    try:
        predictor.predict(_photo())
    finally:
        handle.remove()

    assert seen == [(False, True, 1)]


def test_k_clamped_to_class_count(predictor):
    top = predictor.predict(_photo(), k=10)

    _check_top(top, len(CLASS_NAMES))
    assert sum(top.values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_invalid_k(predictor, k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        predictor.predict(_photo(), k=k)


def test_predict_timed(predictor):
    top, milliseconds = predictor.predict_timed(_photo(), k=2)

    _check_top(top, 2)
    assert isinstance(milliseconds, float)
    assert milliseconds > 0.0


def test_undecodable_file(predictor, tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image")

    with pytest.raises(ImageDecodeError, match="notes.jpg"):
        predictor.predict(path)


@pytest.mark.parametrize("architecture,size", [("custom_cnn", 32), ("resnet18", 32)])
def test_predict_cnn_runs(tmp_path, architecture, size):
    make_run(tmp_path, architecture, size)
    predictor = Predictor.from_run(tmp_path)

    _check_top(predictor.predict(_photo(), k=3), 3)
    assert predictor.family == "cnn"


def test_duplicate_display_names_kept_apart(tmp_path):
    keys = ("n1-Terrier", "n2-Terrier", "n3-Pug")
    make_run(tmp_path, "resfcn18", 16, class_keys=keys, class_names=("Terrier", "Terrier", "Pug"))
    predictor = Predictor.from_run(tmp_path)

    assert predictor.class_names == ["Terrier (n1-Terrier)", "Terrier (n2-Terrier)", "Pug"]
    assert len(predictor.predict(_photo(), k=3)) == 3


def test_other_normalization_rejected(tmp_path):
    make_run(tmp_path, "resfcn18", 16)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["normalization"] = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))

    with pytest.raises(CheckpointError, match="normalization mean"):
        Predictor.from_run(tmp_path)


def test_from_run_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Predictor.from_run(tmp_path / "missing")


def test_class_keys_kept(predictor):
    assert predictor.class_keys == list(CLASS_KEYS)


def test_missing_device_rejected(fcn_run):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="not available"):
        Predictor.from_run(fcn_run, device="cuda")


def test_auto_device(fcn_run):
    assert Predictor.from_run(fcn_run, device="auto").device.type in ("cuda", "mps", "cpu")

# ---------------------------------------------------------------------------------------------------------------
# Command line


def _save_photos(folder, count):
    paths = []
    for index in range(count):
        path = folder / f"dog{index}.png"
        Image.fromarray(_photo(seed=index)).save(path)
        paths.append(path)
    return paths


def test_cli_prints_top_k(fcn_run, tmp_path, capsys):
    paths = _save_photos(tmp_path, 2)

    assert main([str(fcn_run), *map(str, paths), "--top-k", "2"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * 3
    assert lines[0].startswith(str(paths[0]))
    assert lines[3].startswith(str(paths[1]))
    assert lines[1].strip().startswith("1. ")
    assert lines[2].strip().startswith("2. ")
    assert lines[1].rstrip().endswith("%")


def test_cli_json(fcn_run, tmp_path, capsys):
    paths = _save_photos(tmp_path, 1)

    assert main([str(fcn_run), str(paths[0]), "--json"]) == 0

    record = json.loads(capsys.readouterr().out)
    assert record["image"] == str(paths[0])
    assert len(record["top_k"]) == 3
    assert record["milliseconds"] >= 0


def test_cli_bad_image_continues(fcn_run, tmp_path, capsys):
    good = _save_photos(tmp_path, 1)[0]

    assert main([str(fcn_run), str(tmp_path / "missing.jpg"), str(good)]) == 1

    captured = capsys.readouterr()
    assert "missing.jpg" in captured.err
    assert str(good) in captured.out


def test_cli_bad_run_dir(tmp_path, capsys):
    path = _save_photos(tmp_path, 1)[0]

    assert main([str(tmp_path / "no-run"), str(path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_unreadable_run_exit_1(tmp_path, capsys):
    path = _save_photos(tmp_path, 1)[0]
    empty_run = tmp_path / "empty-run"
    empty_run.mkdir()

    assert main([str(empty_run), str(path)]) == 1
    assert "config.json" in capsys.readouterr().err


@pytest.mark.parametrize("spelling", ["--top_k", "--top-k"])
def test_cli_top_k_spellings(fcn_run, tmp_path, capsys, spelling):
    path = _save_photos(tmp_path, 1)[0]

    assert main([str(fcn_run), str(path), spelling, "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["top_k"]) == 2


def test_cli_help_lists_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])

    text = " ".join(capsys.readouterr().out.split())
    assert "--top_k K, --top-k K" in text
    assert "(default: 5)" in text
    assert "Exit codes: 0 success, 1 failure while running, 2 invalid command line" in text


def test_cli_module_entry_point(fcn_run, tmp_path):
    path = _save_photos(tmp_path, 1)[0]

    result = subprocess.run(
        [sys.executable, "-m", "dogbreeds.predict", str(fcn_run), str(path), "--top-k", "1"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert any(name in result.stdout for name in CLASS_NAMES)
    assert len(result.stdout.splitlines()) == 2
