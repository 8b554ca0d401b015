"""Tests for run folders: atomic writes, weights round trips, safe legacy loading, training state, run listing."""

import json
import logging
import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dogbreeds import checkpoint
from dogbreeds.checkpoint import (
    CONFIG_FILE,
    FORMAT_VERSION,
    HISTORY_FILE,
    LAST_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    TRAINER_STATE_FILE,
    CheckpointError,
    atomic_write_bytes,
    atomic_write_json,
    list_runs,
    load_legacy_weights,
    load_model,
    load_training_state,
    read_history,
    read_run_config,
    save_training_state,
    save_weights,
    write_history,
    write_run_config,
)
from dogbreeds.models import MODEL_NAMES, count_parameters

from _models_helpers import CLASS_KEYS, CLASS_NAMES, build_model, make_run

TINY_SIZE = {"custom_cnn": 32, "resnet18": 32, "resfcn18": 16}


def _outputs(model, image_size, seed=123):
    generator = torch.Generator().manual_seed(seed)
    batch = torch.randn(2, 3, image_size, image_size, generator=generator)
    with torch.inference_mode():
        return model.eval()(batch)


def _edit_config(run_dir, **changes):
    path = run_dir / CONFIG_FILE
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


class _CreatesMarker:
    """Pickle payload that creates a file when unpickled, standing in for arbitrary code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


# ---------------------------------------------------------------------------------------------------------------
# Atomic writes


def test_atomic_write_replaces_content(tmp_path):
    path = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second")

    assert path.read_bytes() == b"second"
    assert sorted(item.name for item in path.parent.iterdir()) == ["file.bin"]


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old weights")

    def failing_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new weights")

    assert path.read_bytes() == b"old weights"
    assert sorted(item.name for item in tmp_path.iterdir()) == ["model.safetensors"]


def test_atomic_write_failure_leaves_no_new_file(tmp_path, monkeypatch):
    def failing_replace(source, destination):
        raise OSError("no space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    model = build_model("resfcn18", 16)

    with pytest.raises(OSError):
        save_weights(tmp_path / MODEL_FILE, model)

    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_atomic_write_follows_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "config.json", b"{}")
    finally:
        os.umask(previous)

    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o644

def test_atomic_write_json_plain_types(tmp_path):
    path = tmp_path / "data.json"
    atomic_write_json(path, {"path": tmp_path, "pair": (1, 2), "loss": float("nan"), "best": torch.tensor(0.5),
                             "count": np.int64(3), "counts": np.array([1, 2]), "name": "치와와"})

    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    assert "치와와" in text
    assert json.loads(text) == {"path": str(tmp_path), "pair": [1, 2], "loss": None, "best": 0.5, "count": 3,
                                "counts": [1, 2], "name": "치와와"}


def test_atomic_write_json_rejects_objects(tmp_path):
    with pytest.raises(TypeError, match="object"):
        atomic_write_json(tmp_path / "data.json", {"bad": object()})
    assert not (tmp_path / "data.json").exists()


# ---------------------------------------------------------------------------------------------------------------
# Weights and config


@pytest.mark.parametrize("architecture", MODEL_NAMES)
def test_round_trip_identical_outputs(tmp_path, architecture):
    size = TINY_SIZE[architecture]
    model = make_run(tmp_path, architecture, size)

    loaded, config = load_model(tmp_path)

    assert not loaded.training
    assert torch.equal(_outputs(loaded, size), _outputs(model, size))
    assert config["architecture"] == architecture
    assert config["class_keys"] == list(CLASS_KEYS)
    assert config["class_names"] == list(CLASS_NAMES)
    assert config["parameters"] == count_parameters(model)
    assert config["flops_per_image"] > 0


def test_config_fields(tmp_path):
    make_run(tmp_path, "resfcn18", 16, metrics={"best_top1": 0.5})
    config = read_run_config(tmp_path)

    assert config["format_version"] == FORMAT_VERSION
    assert config["family"] == "fcn"
    assert config["num_classes"] == 3
    assert config["image_size"] == 16
    assert config["resize_size"] == 18
    assert config["normalization"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert config["metrics"] == {"best_top1": 0.5}
    assert {"python", "torch", "torchvision", "dogbreeds"} <= set(config["versions"])
    assert config["created"].endswith("+00:00")


def test_loading_never_calls_torch_load(tmp_path, monkeypatch):
    make_run(tmp_path, "resfcn18", 16)

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load must not be used for safetensors runs")

    monkeypatch.setattr(torch, "load", forbidden)
    load_model(tmp_path)


def test_hub_folder_with_two_files(tmp_path):
    model = make_run(tmp_path, "custom_cnn", 32)
    assert sorted(item.name for item in tmp_path.iterdir()) == [CONFIG_FILE, MODEL_FILE]

    loaded, _ = load_model(str(tmp_path))
    assert torch.equal(_outputs(loaded, 32), _outputs(model, 32))


def test_load_last_weights(tmp_path):
    make_run(tmp_path, "resfcn18", 16, seed=0)
    last = build_model("resfcn18", 16, seed=1)
    save_weights(tmp_path / LAST_FILE, last)

    loaded, _ = load_model(tmp_path, weights=LAST_FILE)
    assert torch.equal(_outputs(loaded, 16), _outputs(last, 16))


def test_saved_keys_have_no_wrapper_prefix(tmp_path):
    model = build_model("custom_cnn", 32)
    save_weights(tmp_path / MODEL_FILE, torch.nn.DataParallel(model))

    assert set(load_file(tmp_path / MODEL_FILE)) == set(model.state_dict())


def test_missing_run_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nowhere")


def test_missing_config(tmp_path):
    with pytest.raises(CheckpointError, match="config.json does not exist"):
        load_model(tmp_path)


def test_missing_weights(tmp_path):
    make_run(tmp_path, "resfcn18", 16)
    (tmp_path / MODEL_FILE).unlink()

    with pytest.raises(CheckpointError) as error:
        load_model(tmp_path)
    assert "Missing weights file" in str(error.value)
    assert str(tmp_path / MODEL_FILE) in str(error.value)


def test_truncated_weights(tmp_path):
    make_run(tmp_path, "resfcn18", 16)
    path = tmp_path / MODEL_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    with pytest.raises(CheckpointError) as error:
        load_model(tmp_path)
    assert "corrupt or truncated" in str(error.value)
    assert str(path) in str(error.value)


def test_garbage_weights(tmp_path):
    make_run(tmp_path, "resfcn18", 16)
    (tmp_path / MODEL_FILE).write_bytes(b"\x00" * 3)

    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(tmp_path)


def test_truncated_config(tmp_path):
    make_run(tmp_path, "resfcn18", 16)
    path = tmp_path / CONFIG_FILE
    path.write_text(path.read_text()[:40])

    with pytest.raises(CheckpointError) as error:
        load_model(tmp_path)
    assert "corrupt or truncated" in str(error.value)
    assert str(path) in str(error.value)


def test_config_without_format_version(tmp_path):
    (tmp_path / CONFIG_FILE).write_text('{"architecture": "resfcn18"}')
    with pytest.raises(CheckpointError, match="not a run config written by dogbreeds"):
        read_run_config(tmp_path)


def test_config_not_an_object(tmp_path):
    (tmp_path / CONFIG_FILE).write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="JSON object"):
        read_run_config(tmp_path)


def test_unknown_architecture(tmp_path):
    make_run(tmp_path, "resfcn18", 16)
    _edit_config(tmp_path, architecture="vgg16")

    with pytest.raises(CheckpointError) as error:
        load_model(tmp_path)
    message = str(error.value)
    assert "'vgg16'" in message
    assert str(tmp_path / CONFIG_FILE) in message
    for name in MODEL_NAMES:
        assert name in message


def test_newer_format_version(tmp_path):
    make_run(tmp_path, "resfcn18", 16)
    _edit_config(tmp_path, format_version=FORMAT_VERSION + 1)

    with pytest.raises(CheckpointError, match="Upgrade dogbreeds"):
        read_run_config(tmp_path)


def test_class_names_length_mismatch(tmp_path):
    make_run(tmp_path, "resfcn18", 16)
    _edit_config(tmp_path, class_names=["Chihuahua", "pug"])

    with pytest.raises(CheckpointError, match="class_names has 2 entries, but num_classes is 3"):
        read_run_config(tmp_path)


def test_head_size_differs_from_classes(tmp_path):
    make_run(tmp_path, "resfcn18", 16)
    _edit_config(tmp_path, num_classes=4, class_keys=[*CLASS_KEYS, "n02-extra"], class_names=[*CLASS_NAMES, "extra"])

    with pytest.raises(CheckpointError) as error:
        load_model(tmp_path)
    message = str(error.value)
    assert "has 3 outputs" in message
    assert "lists 4 classes" in message
    assert str(tmp_path / MODEL_FILE) in message


def test_mismatched_keys(tmp_path):
    model = make_run(tmp_path, "resfcn18", 16)
    state = dict(model.state_dict())
    state.pop("fc.bias")
    state["extra.weight"] = torch.zeros(2)
    save_weights_state(tmp_path / MODEL_FILE, state)

    with pytest.raises(CheckpointError) as error:
        load_model(tmp_path)
    message = str(error.value)
    assert "missing keys [fc.bias]" in message
    assert "unexpected keys [extra.weight]" in message
    assert str(tmp_path / MODEL_FILE) in message


def test_weights_of_other_architecture(tmp_path):
    make_run(tmp_path, "resfcn18", 16)
    save_weights(tmp_path / MODEL_FILE, build_model("custom_cnn", 32))

    with pytest.raises(CheckpointError, match="do not match the resfcn18 architecture"):
        load_model(tmp_path)


def test_shape_mismatch_names_shapes(tmp_path):
    make_run(tmp_path, "resfcn18", 16)
    _edit_config(tmp_path, image_size=24)

    with pytest.raises(CheckpointError) as error:
        load_model(tmp_path)
    assert "stem.0.weight: expected (216, 1728), found (96, 768)" in str(error.value)


def test_write_invalid_config_writes_nothing(tmp_path):
    with pytest.raises(CheckpointError, match="num_classes"):
        write_run_config(tmp_path, {"architecture": "resfcn18", "num_classes": 1, "class_keys": ["a"],
                                    "class_names": ["a"], "image_size": 16})
    assert not (tmp_path / CONFIG_FILE).exists()


def save_weights_state(path, state):
    from safetensors.torch import save

    atomic_write_bytes(path, save({key: value.contiguous() for key, value in state.items()}))


# ---------------------------------------------------------------------------------------------------------------
# Legacy .pth files


@pytest.mark.parametrize("wrap", ["plain", "model_state_dict", "module_prefix"])
def test_legacy_pth_loads(tmp_path, wrap):
    model = make_run(tmp_path, "resfcn18", 16)
    state = model.state_dict()
    if wrap == "model_state_dict":
        payload = {"model_state_dict": state, "epoch": 7, "best_acc": 0.42}
    elif wrap == "module_prefix":
        payload = {f"module.{key}": value for key, value in state.items()}
    else:
        payload = state
    torch.save(payload, tmp_path / "model.pth")

    loaded, _ = load_model(tmp_path, weights="model.pth")
    assert torch.equal(_outputs(loaded, 16), _outputs(model, 16))


@pytest.mark.parametrize("writer", ["torch_save", "plain_pickle"])
def test_hostile_pickle_rejected(tmp_path, writer):
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.pth"
    payload = {"fc.weight": torch.zeros(3, 2), "fc.bias": _CreatesMarker(marker)}
    if writer == "torch_save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as file:
            pickle.dump(payload, file, protocol=2)
    assert not marker.exists()

    with pytest.raises(CheckpointError) as error:
        load_legacy_weights(path)
    message = str(error.value)
    assert str(path) in message
    assert "Rejected" in message
    assert "Unsupported global" in message
    assert "add_safe_globals" not in message
    assert not marker.exists()


def test_hostile_pickle_through_load_model(tmp_path):
    make_run(tmp_path, "resfcn18", 16)
    marker = tmp_path / "code-ran"
    torch.save({"weights": _CreatesMarker(marker)}, tmp_path / "model.pt")

    with pytest.raises(CheckpointError, match=r"Unsupported global: GLOBAL \w+\.open"):
        load_model(tmp_path, weights="model.pt")
    assert not marker.exists()


def test_legacy_without_state_dict(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"epoch": 3, "note": "no weights"}, path)

    with pytest.raises(CheckpointError, match="does not contain a state_dict"):
        load_legacy_weights(path)


def test_legacy_corrupt(tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(b"PK\x03\x04 definitely not a zip")

    with pytest.raises(CheckpointError, match="corrupt"):
        load_legacy_weights(path)


def test_unsupported_weights_suffix(tmp_path):
    make_run(tmp_path, "resfcn18", 16)
    (tmp_path / "model.bin").write_bytes(b"1234")

    with pytest.raises(CheckpointError, match="Unsupported weights file"):
        load_model(tmp_path, weights="model.bin")


# ---------------------------------------------------------------------------------------------------------------
# Training state


def _train_steps(model, optimizer, scheduler, steps=3):
    model.train()
    for step in range(steps):
        generator = torch.Generator().manual_seed(step)
        loss = model(torch.randn(4, 3, 16, 16, generator=generator)).logsumexp(dim=1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def _warmup_then_cosine(optimizer):
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (step + 1) / 3)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[2])


@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_training_state_round_trip(tmp_path, optimizer_name):
    def make_optimizer(model):
        if optimizer_name == "sgd":
            return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        return torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))

    model = build_model("resfcn18", 16)
    optimizer = make_optimizer(model)
    scheduler = _warmup_then_cosine(optimizer)
    _train_steps(model, optimizer, scheduler)
    rng = torch.get_rng_state()
    save_training_state(tmp_path, optimizer, scheduler, {"epoch": 3, "rng": rng, "best_loss": float("inf"),
                                                         "pair": (1, 2), "note": None})

    restored_optimizer = make_optimizer(model)
    restored_scheduler = _warmup_then_cosine(restored_optimizer)
    state = load_training_state(tmp_path, restored_optimizer, restored_scheduler)

    assert state["epoch"] == 3
    assert torch.equal(state["rng"], rng)
    assert state["best_loss"] == float("inf")
    assert state["pair"] == (1, 2)
    assert state["note"] is None

    saved, restored = optimizer.state_dict(), restored_optimizer.state_dict()
    assert saved["param_groups"] == restored["param_groups"]
    assert saved["state"].keys() == restored["state"].keys()
    for parameter_id, values in saved["state"].items():
        for name, value in values.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(restored["state"][parameter_id][name]))

    assert restored_scheduler.get_last_lr() == scheduler.get_last_lr()
    scheduler.step()
    restored_scheduler.step()
    assert restored_scheduler.get_last_lr() == scheduler.get_last_lr()


def test_training_state_file_layout(tmp_path):
    model = build_model("resfcn18", 16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = _warmup_then_cosine(optimizer)
    _train_steps(model, optimizer, scheduler)
    save_training_state(tmp_path, optimizer, scheduler, {"epoch": 1})

    tensors = load_file(tmp_path / OPTIMIZER_FILE)
    assert "optimizer/state/0/momentum_buffer" in tensors
    document = json.loads((tmp_path / TRAINER_STATE_FILE).read_text())
    assert document["optimizer_class"] == "SGD"
    assert document["scheduler_class"] == "SequentialLR"
    assert document["scheduler"]["_schedulers"][0]["lr_lambdas"] == [None]


def test_training_state_rejects_functions(tmp_path):
    model = build_model("resfcn18", 16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    with pytest.raises(CheckpointError, match="'state/callback'"):
        save_training_state(tmp_path, optimizer, None, {"callback": print})
    assert not (tmp_path / TRAINER_STATE_FILE).exists()


def test_training_state_other_optimizer(tmp_path):
    model = build_model("resfcn18", 16)
    save_training_state(tmp_path, torch.optim.SGD(model.parameters(), lr=0.1), None, {})

    with pytest.raises(CheckpointError, match="SGD optimizer, but a AdamW was given"):
        load_training_state(tmp_path, torch.optim.AdamW(model.parameters()), None)


def test_training_state_mixed_saves(tmp_path):
    model = build_model("resfcn18", 16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    save_training_state(tmp_path, optimizer, None, {"epoch": 1})
    first_tensors = (tmp_path / OPTIMIZER_FILE).read_bytes()
    save_training_state(tmp_path, optimizer, None, {"epoch": 2})
    (tmp_path / OPTIMIZER_FILE).write_bytes(first_tensors)

    with pytest.raises(CheckpointError, match="different saves"):
        load_training_state(tmp_path, optimizer, None)


def test_training_state_missing(tmp_path):
    model = build_model("resfcn18", 16)
    with pytest.raises(CheckpointError, match="trainer_state.json does not exist"):
        load_training_state(tmp_path, torch.optim.SGD(model.parameters(), lr=0.1), None)


# ---------------------------------------------------------------------------------------------------------------
# History and run listing


def test_history_round_trip(tmp_path):
    history = [{"epoch": 1, "val_top1": 0.25, "train_loss": float("nan")}, {"epoch": 2, "val_top1": 0.5}]
    write_history(tmp_path, history)

    assert read_history(tmp_path) == [{"epoch": 1, "val_top1": 0.25, "train_loss": None}, history[1]]
    assert read_history(tmp_path / "elsewhere") == []


def test_list_runs(tmp_path, caplog):
    metrics = {"best_epoch": 2, "best_top1": 0.5, "best_top5": 0.9, "epochs_completed": 3, "train_seconds": 12.5,
               "stopped": True}
    make_run(tmp_path / "b-run", "resfcn18", 16, metrics=metrics, train_config={"pretrained": False})
    write_history(tmp_path / "b-run", [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}])
    make_run(tmp_path / "a-run", "custom_cnn", 32)
    _edit_config(tmp_path / "a-run", created="2000-01-01T00:00:00+00:00")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / CONFIG_FILE).write_text("{not json")
    (tmp_path / "no-config").mkdir()
    (tmp_path / "notes.txt").write_text("not a run")

    with caplog.at_level(logging.WARNING, logger="dogbreeds.checkpoint"):
        runs = list_runs(tmp_path)

    assert [run.name for run in runs] == ["b-run", "a-run"]
    assert "broken" in caplog.text
    assert "no-config" not in caplog.text

    newest = runs[0]
    assert newest.run_dir == tmp_path / "b-run"
    assert newest.architecture == "resfcn18"
    assert newest.family == "fcn"
    assert newest.num_classes == 3
    assert newest.image_size == 16
    assert newest.params == count_parameters(build_model("resfcn18", 16))
    assert newest.flops_per_image > 0
    assert newest.best_epoch == 2
    assert newest.best_top1 == 0.5
    assert newest.best_top5 == 0.9
    assert newest.epochs == 3
    assert newest.train_seconds == 12.5
    assert newest.stopped is True
    assert newest.has_weights is True
    assert len(newest.history) == 3

    oldest = runs[1]
    assert oldest.best_top1 is None
    assert oldest.epochs == 0
    assert oldest.family == "cnn"


def test_list_runs_bad_history_kept(tmp_path, caplog):
    make_run(tmp_path / "run", "resfcn18", 16)
    (tmp_path / "run" / HISTORY_FILE).write_text('{"epoch": 1}')

    with caplog.at_level(logging.WARNING, logger="dogbreeds.checkpoint"):
        runs = list_runs(tmp_path)

    assert [run.name for run in runs] == ["run"]
    assert runs[0].history == []
    assert "history" in caplog.text


def test_list_runs_missing_root(tmp_path):
    assert list_runs(tmp_path / "checkpoints") == []


def test_list_runs_root_is_file(tmp_path):
    path = tmp_path / "checkpoints"
    path.write_text("")
    with pytest.raises(NotADirectoryError):
        list_runs(path)


def test_weights_without_config_rejected(tmp_path):
    save_weights(tmp_path / MODEL_FILE, build_model("resfcn18", 16))
    assert checkpoint.read_weights(tmp_path / MODEL_FILE).keys() == build_model("resfcn18", 16).state_dict().keys()

    with pytest.raises(CheckpointError, match="config.json"):
        load_model(tmp_path)
