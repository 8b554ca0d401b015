"""Tests for dogbreeds.trainer.fit: run files, events, stopping, early stopping, resume and batching."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import pytest
import torch

from _trainer_helpers import BatchRecorder, make_dataset, tiny_config
from dogbreeds import checkpoint
from dogbreeds.config import TrainConfig
from dogbreeds.metrics import EPOCH_LINE_PATTERN, EPOCH_METRIC_KEYS
from dogbreeds import trainer
from dogbreeds.optimization import MIN_WARMUP_STEPS, build_optimizer, cosine_with_warmup, warmup_step_count
from dogbreeds.trainer import TrainEvent, TrainingDivergedError, fit


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "images")


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_fit_writes_loadable_run(data_dir: Path, tmp_path: Path) -> None:
    result = fit(tiny_config(data_dir, tmp_path))

    names = {path.name for path in result.run_dir.iterdir()}
    assert {"config.json", "model.safetensors", "last.safetensors", "history.json", "optimizer.safetensors",
            "trainer_state.json"} <= names
    assert not any(name.endswith(".tmp") for name in names)
    assert result.run_dir.parent == tmp_path / "runs"
    assert result.run_dir.name.startswith("resfcn18-")
    assert result.stopped is False
    assert result.early_stopped is False

    model, config = checkpoint.load_model(result.run_dir)
    assert config["architecture"] == "resfcn18"
    assert config["class_keys"] == ["n02085620-Chihuahua", "n02085936-Maltese_dog", "n02088364-beagle"]
    assert config["class_names"] == ["Chihuahua", "Maltese dog", "beagle"]
    assert config["image_size"] == 16
    assert config["train_config"]["epochs"] == 2
    assert config["train_config"]["lr"] == pytest.approx(0.05 * 4 / 64)
    assert config["metrics"]["epochs_completed"] == 2
    assert config["metrics"]["last_epoch"] == 2
    assert config["metrics"]["best_epoch"] == result.best["epoch"]
    assert config["metrics"]["best_top1"] == pytest.approx(result.best["val_top1"])
    assert config["metrics"]["stopped"] is False
    assert config["metrics"]["finished"] is True
    assert config["metrics"]["early_stopped"] is False
    assert config["parameters"] > 0
    assert config["flops_per_image"] > 0
    assert "torch" in config["versions"]
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 3)

    last_model, _ = checkpoint.load_model(result.run_dir, weights="last.safetensors")
    assert last_model.architecture == "resfcn18"

    history = _read_json(result.run_dir / "history.json")
    assert [entry["epoch"] for entry in history] == [1, 2]
    assert history == result.history
    for key in EPOCH_METRIC_KEYS:
        assert math.isfinite(history[0][key]), key


@pytest.mark.parametrize("threaded", [False, True])
def test_fit_follows_prefetch_policy(data_dir: Path, tmp_path: Path, monkeypatch, threaded: bool) -> None:
    from dogbreeds import data as data_module

    requests: list[torch.device] = []
    prefetch_calls: list[int] = []
    real_prefetch = data_module._prefetch

    def policy(device: torch.device, processes: int = 1) -> bool:
        requests.append(device)
        return threaded

    def counting_prefetch(source, depth):
        prefetch_calls.append(depth)
        return real_prefetch(source, depth)

    monkeypatch.setattr(data_module, "prefetch_in_thread", policy)
    monkeypatch.setattr(data_module, "_prefetch", counting_prefetch)

    result = fit(tiny_config(data_dir, tmp_path, epochs=1))

    assert requests == [torch.device("cpu")]
    assert bool(prefetch_calls) is threaded
    assert result.history[0]["train_images"] > 0


def test_event_stream_order(data_dir: Path, tmp_path: Path) -> None:
    events: list[TrainEvent] = []
    result = fit(tiny_config(data_dir, tmp_path, epochs=2), on_event=events.append)

    # The cache folder is new, so the images are decoded first, with "prepare" events before "start".
    prepare = [event for event in events if event.kind == "prepare"]
    assert prepare
    assert prepare[-1].batch == prepare[-1].num_batches == 18
    kinds = [event.kind for event in events]
    assert kinds[:len(prepare)] == ["prepare"] * len(prepare)
    kinds = kinds[len(prepare):]
    events = events[len(prepare):]
    assert kinds[0] == "start"
    assert kinds[-1] == "end"
    assert kinds.count("epoch") == 2
    assert kinds.count("end") == 1

    start = events[0]
    assert start.epoch == 1
    assert start.num_epochs == 2
    assert start.num_batches >= 2
    assert start.run_dir == result.run_dir
    assert "Split" in start.message

    batches = [event for event in events if event.kind == "batch"]
    for epoch in (1, 2):
        of_epoch = [event for event in batches if event.epoch == epoch]
        assert of_epoch, f"no batch events in epoch {epoch}"
        assert of_epoch[-1].batch == of_epoch[-1].num_batches == start.num_batches
        assert all(event.loss is not None and math.isfinite(event.loss) for event in of_epoch)

    epoch_events = [event for event in events if event.kind == "epoch"]
    assert [event.epoch for event in epoch_events] == [1, 2]
    for event in epoch_events:
        assert set(EPOCH_METRIC_KEYS) <= set(event.metrics)
        assert EPOCH_LINE_PATTERN.match(event.message), event.message
    assert kinds.index("epoch") > kinds.index("batch")

    end = events[-1]
    assert end.message == "finished"
    assert end.metrics == result.best


def test_epoch_log_line_format(data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dogbreeds.trainer"):
        result = fit(tiny_config(data_dir, tmp_path))

    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("epoch ")]
    assert len(lines) == 2
    for line, entry in zip(lines, result.history):
        match = EPOCH_LINE_PATTERN.match(line)
        assert match, line
        assert int(match["epoch"]) == entry["epoch"]
        assert int(match["epochs"]) == 2
        assert float(match["train_loss"]) == pytest.approx(entry["train_loss"], abs=1e-4)
        assert float(match["val_top1"]) == pytest.approx(100 * entry["val_top1"], abs=0.01)
        assert float(match["lr"]) == pytest.approx(entry["lr"], rel=1e-3)


def test_stop_keeps_last_completed_epoch(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = BatchRecorder().install(monkeypatch)
    events: list[TrainEvent] = []
    snapshot: dict[str, bytes] = {}

    def on_event(event: TrainEvent) -> None:
        events.append(event)
        if event.kind == "epoch" and event.epoch == 1:
            snapshot["last"] = (event.run_dir / "last.safetensors").read_bytes()
            snapshot["batches"] = len(recorder.train_batches)

    def should_stop() -> bool:
        # Stop right after the first training batch of epoch 2.
        return any(event.kind == "epoch" for event in events)

    result = fit(tiny_config(data_dir, tmp_path, epochs=3), on_event=on_event, should_stop=should_stop)

    assert result.stopped is True
    assert [entry["epoch"] for entry in result.history] == [1]
    assert len(recorder.train_batches) == snapshot["batches"] + 1
    assert events[-1].kind == "end"
    assert events[-1].message == "stopped"
    assert (result.run_dir / "last.safetensors").read_bytes() == snapshot["last"]

    config = checkpoint.read_run_config(result.run_dir)
    assert config["metrics"]["stopped"] is True
    assert config["metrics"]["finished"] is False
    assert config["metrics"]["epochs_completed"] == 1
    assert len(_read_json(result.run_dir / "history.json")) == 1
    checkpoint.load_model(result.run_dir)


def test_stop_in_first_epoch_saves_nothing(data_dir: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = BatchRecorder().install(monkeypatch)
    events: list[TrainEvent] = []
    result = fit(tiny_config(data_dir, tmp_path), on_event=events.append,
                 should_stop=lambda: any(event.kind == "start" for event in events))

    assert result.stopped is True
    assert result.history == []
    assert result.best == {}
    assert len(recorder.train_batches) == 1
    assert not result.run_dir.exists()


def test_stop_while_preparing_data(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = BatchRecorder().install(monkeypatch)
    events: list[TrainEvent] = []
    result = fit(tiny_config(data_dir, tmp_path), on_event=events.append, should_stop=lambda: True)

    assert result.stopped is True
    assert result.history == []
    assert [event.kind for event in events] == ["prepare", "end"]
    assert recorder.train_batches == []
    assert not result.run_dir.exists()

    again = fit(tiny_config(data_dir, tmp_path, epochs=1))
    assert len(again.history) == 1


def test_early_stopping_patience(data_dir: Path, tmp_path: Path) -> None:
    # A learning rate of 1e-9 leaves the weights practically unchanged, so top-1 cannot improve after epoch 1.
    result = fit(tiny_config(data_dir, tmp_path, epochs=6, patience=2, lr=1e-9))

    assert result.early_stopped is True
    assert result.stopped is False
    assert [entry["epoch"] for entry in result.history] == [1, 2, 3]
    assert result.best["epoch"] == 1

    metrics = checkpoint.read_run_config(result.run_dir)["metrics"]
    assert metrics["early_stopped"] is True
    assert metrics["finished"] is True
    assert metrics["epochs_completed"] == 3


def test_patience_not_reached_is_not_early_stop(data_dir: Path, tmp_path: Path) -> None:
    result = fit(tiny_config(data_dir, tmp_path, epochs=2, patience=5))

    assert result.early_stopped is False
    assert len(result.history) == 2


def test_resume_matches_uninterrupted_run(data_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(data_dir, tmp_path, epochs=3, optimizer="adamw", label_smoothing=0.1)
    full = fit(dataclasses.replace(config, run_name="full"))

    events: list[TrainEvent] = []
    interrupted = fit(dataclasses.replace(config, run_name="resumed"), on_event=events.append,
                      should_stop=lambda: sum(event.kind == "epoch" for event in events) == 2)
    assert [entry["epoch"] for entry in interrupted.history] == [1, 2]

    resumed_events: list[TrainEvent] = []
    resumed = fit(TrainConfig(train_dir=data_dir, resume=interrupted.run_dir, epochs=3, device="cpu", workers=0,
                              cache_dir=tmp_path / "cache"), on_event=resumed_events.append)

    assert resumed.run_dir == interrupted.run_dir
    assert resumed_events[0].kind == "start"
    assert resumed_events[0].epoch == 3
    assert [event.epoch for event in resumed_events if event.kind == "epoch"] == [3]
    assert [entry["epoch"] for entry in resumed.history] == [1, 2, 3]
    assert _read_json(resumed.run_dir / "history.json") == resumed.history

    full_weights = checkpoint.read_weights(full.run_dir / "last.safetensors")
    resumed_weights = checkpoint.read_weights(resumed.run_dir / "last.safetensors")
    for key, tensor in full_weights.items():
        torch.testing.assert_close(resumed_weights[key], tensor, msg=key)
    assert resumed.history[-1]["val_loss"] == pytest.approx(full.history[-1]["val_loss"], rel=1e-5)

    config_json = checkpoint.read_run_config(resumed.run_dir)
    assert config_json["metrics"]["epochs_completed"] == 3
    assert config_json["train_config"]["optimizer"] == "adamw"
    assert config_json["train_config"]["resume"] is None


def test_resume_keeps_run_settings(data_dir: Path, tmp_path: Path) -> None:
    first = fit(tiny_config(data_dir, tmp_path, epochs=1, lr=0.02))
    resumed = fit(tiny_config(data_dir, tmp_path, arch="custom_cnn", image_size=32, lr=0.5, epochs=2,
                              resume=first.run_dir))

    config = checkpoint.read_run_config(resumed.run_dir)
    assert config["architecture"] == "resfcn18"
    assert config["train_config"]["lr"] == 0.02
    assert config["train_config"]["epochs"] == 2
    assert len(resumed.history) == 2


def test_resume_missing_folder_raises(data_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "runs" / "no-such-run"
    with pytest.raises(FileNotFoundError) as caught:
        fit(tiny_config(data_dir, tmp_path, resume=missing))

    assert str(missing) in str(caught.value)
    assert not missing.exists()


def test_resume_folder_without_state_raises(data_dir: Path, tmp_path: Path) -> None:
    empty_run = tmp_path / "runs" / "empty"
    empty_run.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="config.json"):
        fit(tiny_config(data_dir, tmp_path, resume=empty_run))


def test_resume_with_other_classes_raises(data_dir: Path, tmp_path: Path) -> None:
    first = fit(tiny_config(data_dir, tmp_path, epochs=1))
    other = make_dataset(tmp_path / "other", classes=("n1-Akita", "n2-Boxer", "n3-Collie"))

    with pytest.raises(ValueError) as caught:
        fit(tiny_config(other, tmp_path, epochs=2, resume=first.run_dir))

    message = str(caught.value)
    assert "classes differ" in message
    assert "n02085620-Chihuahua" in message
    assert "n1-Akita" in message
    assert len(_read_json(first.run_dir / "history.json")) == 1


def test_missing_cuda_raises_before_data(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")

    with pytest.raises(ValueError, match="'cuda' was requested but is not available"):
        fit(tiny_config(tmp_path / "no-images", tmp_path, device="cuda"))
    assert not (tmp_path / "runs").exists()


def test_invalid_config_raises_before_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Epochs must be at least 1"):
        fit(tiny_config(tmp_path / "no-images", tmp_path, epochs=0))


def test_missing_data_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-images"):
        fit(tiny_config(tmp_path / "no-images", tmp_path))


def test_last_batch_never_single(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The 15 training images of the module's data set split into batches of 7 as 7 + 7 + 1, and BatchNorm
    # cannot train on the lone last image, so the loader must fold it into the batch before.
    recorder = BatchRecorder().install(monkeypatch)
    result = fit(tiny_config(data_dir, tmp_path, epochs=1, batch_size=7))

    train_images = result.history[0]["train_images"]
    assert train_images % 7 == 1, "the data set no longer leaves a remainder of one"
    assert sum(recorder.train_batches) == train_images
    assert min(recorder.train_batches) >= 2


def test_small_set_shrinks_batch(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = BatchRecorder().install(monkeypatch)
    result = fit(tiny_config(data_dir, tmp_path, epochs=1, batch_size=64))

    train_images = result.history[0]["train_images"]
    assert recorder.train_batches == [train_images]
    assert train_images > 2


def test_run_name_collision(data_dir: Path, tmp_path: Path) -> None:
    first = fit(tiny_config(data_dir, tmp_path, epochs=1, run_name="same"))
    assert first.run_dir == tmp_path / "runs" / "same"

    with pytest.raises(FileExistsError, match="resume"):
        fit(tiny_config(data_dir, tmp_path, epochs=1, run_name="same"))


@pytest.mark.slow
def test_custom_cnn_learns_channels_last(data_dir: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    training_formats: list[bool] = []
    original_forward = torch.nn.Conv2d.forward

    def record_format(self, x):
        if self.training:
            training_formats.append(x.is_contiguous(memory_format=torch.channels_last))
        return original_forward(self, x)

    monkeypatch.setattr(torch.nn.Conv2d, "forward", record_format)
    result = fit(tiny_config(data_dir, tmp_path, arch="custom_cnn", image_size=32, epochs=3, batch_size=8,
                             optimizer="adamw"))

    assert training_formats
    assert all(training_formats)
    assert result.best["val_top1"] == 1.0
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert checkpoint.read_run_config(result.run_dir)["train_config"]["lr"] == pytest.approx(1e-3)


def test_cosine_with_warmup_values() -> None:
    factor = cosine_with_warmup(warmup_steps=4, total_steps=12)

    assert [factor(step) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == pytest.approx(1.0)
    assert factor(8) == pytest.approx(0.5)
    assert factor(12) == pytest.approx(0.0)
    assert factor(50) == pytest.approx(0.0)
    assert cosine_with_warmup(0, 10)(0) == pytest.approx(1.0)


def test_optimizer_skips_decay_on_vectors() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    sgd = build_optimizer(model, TrainConfig(lr=0.1, weight_decay=0.01))
    adamw = build_optimizer(model, TrainConfig(lr=0.1, optimizer="adamw"))

    assert isinstance(sgd, torch.optim.SGD)
    assert isinstance(adamw, torch.optim.AdamW)
    decayed, plain = sgd.param_groups
    assert [tuple(p.shape) for p in decayed["params"]] == [(3, 4)]
    assert decayed["weight_decay"] == 0.01
    assert plain["weight_decay"] == 0.0
    assert len(plain["params"]) == 3
    assert decayed["momentum"] == 0.9


def test_warmup_has_minimum_steps() -> None:
    # 9 steps per epoch would reach the peak learning rate after 9 steps; the minimum stretches it.
    assert warmup_step_count(1.0, steps_per_epoch=9, total_steps=1000) == MIN_WARMUP_STEPS
    assert warmup_step_count(1.0, steps_per_epoch=9, total_steps=18) == 18
    # Large data sets keep warmup_epochs of steps.
    assert warmup_step_count(1.0, steps_per_epoch=257, total_steps=2570) == 257
    assert warmup_step_count(0.5, steps_per_epoch=300, total_steps=3000) == 150
    assert warmup_step_count(0.0, steps_per_epoch=9, total_steps=18) == 0


def _install_logit_hook(monkeypatch: pytest.MonkeyPatch, change) -> None:
    """Make every model that fit() creates pass its logits through change(module, logits)."""
    original = trainer.create_model

    def create_and_hook(*args, **kwargs) -> torch.nn.Module:
        model = original(*args, **kwargs)
        model.register_forward_hook(lambda module, inputs, output: change(module, output))
        return model

    monkeypatch.setattr(trainer, "create_model", create_and_hook)


def test_nan_loss_stops_and_keeps_epoch(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[TrainEvent] = []
    snapshot: dict[str, bytes] = {}

    def on_event(event: TrainEvent) -> None:
        events.append(event)
        if event.kind == "epoch":
            snapshot["last"] = (event.run_dir / "last.safetensors").read_bytes()

    # From epoch 2 on, the training logits are NaN, as after an exploding update.
    epoch_done = lambda: any(event.kind == "epoch" for event in events)  # noqa: E731
    _install_logit_hook(monkeypatch, lambda module, logits: logits * math.nan
                        if module.training and epoch_done() else logits)

    with pytest.raises(TrainingDivergedError) as caught:
        fit(tiny_config(data_dir, tmp_path, epochs=3, run_name="diverged"), on_event=on_event)

    message = str(caught.value)
    assert "epoch 2" in message
    assert "nan" in message
    assert "learning rate" in message
    assert "--lr" in message
    assert "--optimizer adamw" in message
    assert "keeps epoch 1" in message
    run_dir = tmp_path / "runs" / "diverged"
    assert [entry["epoch"] for entry in _read_json(run_dir / "history.json")] == [1]
    assert (run_dir / "last.safetensors").read_bytes() == snapshot["last"]
    checkpoint.load_model(run_dir)


def test_huge_val_loss_warns_unstable(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    # In evaluation, every image is predicted as class 0 with a margin of 1000, so the loss is about 667.
    def confident_class_zero(module: torch.nn.Module, logits: torch.Tensor) -> torch.Tensor:
        if module.training:
            return logits
        fixed = torch.zeros_like(logits)
        fixed[:, 0] = 1000.0
        return fixed

    _install_logit_hook(monkeypatch, confident_class_zero)
    with caplog.at_level(logging.WARNING, logger="dogbreeds.trainer"):
        fit(tiny_config(data_dir, tmp_path, epochs=1))

    warnings = [record.getMessage() for record in caplog.records if "unstable" in record.getMessage()]
    assert len(warnings) == 1
    assert "epoch 1" in warnings[0]
    assert "--lr" in warnings[0]


def test_train_loss_warns_after_first_epoch(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    # Training predicts class 0 with a margin of 1000 (loss about 667 in every epoch); validation logits are all
    # zero, so the validation loss is exactly ln(3), the loss of uniform guessing.
    def skewed_training(module: torch.nn.Module, logits: torch.Tensor) -> torch.Tensor:
        shift = torch.zeros_like(logits)
        if module.training:
            shift[:, 0] = 1000.0
        return logits * 0 + shift

    _install_logit_hook(monkeypatch, skewed_training)
    with caplog.at_level(logging.WARNING, logger="dogbreeds.trainer"):
        fit(tiny_config(data_dir, tmp_path, epochs=2))

    warnings = [record.getMessage() for record in caplog.records if "unstable" in record.getMessage()]
    assert len(warnings) == 1
    assert "epoch 2" in warnings[0]


def test_uniform_loss_has_no_warning(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    _install_logit_hook(monkeypatch, lambda module, logits: logits * 0)
    with caplog.at_level(logging.WARNING, logger="dogbreeds.trainer"):
        fit(tiny_config(data_dir, tmp_path, epochs=2))

    assert not [record for record in caplog.records if "unstable" in record.getMessage()]


def test_resume_without_epochs_left_raises(data_dir: Path, tmp_path: Path) -> None:
    first = fit(tiny_config(data_dir, tmp_path, epochs=2))

    # The missing train_dir shows that the check comes before any data is prepared.
    for epochs in (1, 2):
        with pytest.raises(ValueError) as caught:
            fit(tiny_config(tmp_path / "no-images", tmp_path, epochs=epochs, resume=first.run_dir))
        message = str(caught.value)
        assert f"already completed 2 epochs; epochs {epochs} leaves nothing to train" in message
        assert "epochs to 3 or more" in message
        assert str(first.run_dir) in message


def _record_autocast_in_linear(monkeypatch: pytest.MonkeyPatch) -> list[torch.dtype | None]:
    """Record, for every training-mode Linear forward, the CPU autocast dtype in effect (None when off)."""
    seen: list[torch.dtype | None] = []
    original = torch.nn.Linear.forward

    def forward(self, inputs):
        if self.training:
            seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return original(self, inputs)

    monkeypatch.setattr(torch.nn.Linear, "forward", forward)
    return seen


@pytest.mark.parametrize("precision, expected", [("fp32", None), ("bf16", torch.bfloat16)])
def test_precision_sets_autocast(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 caplog: pytest.LogCaptureFixture, precision: str, expected) -> None:
    if expected is not None and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU has no bf16 instructions")
    seen = _record_autocast_in_linear(monkeypatch)

    with caplog.at_level(logging.INFO, logger="dogbreeds.trainer"):
        result = fit(tiny_config(data_dir, tmp_path, precision=precision, epochs=1))

    assert seen and set(seen) == {expected}
    assert math.isfinite(result.history[-1]["train_loss"])
    assert ("bf16 autocast" if expected else "(1 process, fp32)") in caplog.text
    assert _read_json(result.run_dir / "config.json")["train_config"]["precision"] == precision


def test_unknown_precision_raises_before_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Unknown precision 'fp16'.*auto, fp32, bf16"):
        fit(tiny_config(tmp_path / "no-images", tmp_path, precision="fp16"))
    assert not (tmp_path / "runs").exists()
