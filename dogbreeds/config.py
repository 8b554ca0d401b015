"""TrainConfig: every setting of a training run, shared by the CLI, the app, fit() and the run folder."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw")

# Default learning rates, used when TrainConfig.lr is None. SGD follows the linear scaling rule: 0.05 for a
# global batch of 64 images, proportionally more or less for other batch sizes. AdamW adapts its step size per
# weight, so its default does not scale with the batch. Fine-tuning pretrained weights uses a tenth of either.
SGD_LR_PER_64_IMAGES = 0.05
ADAMW_LR = 1e-3
PRETRAINED_LR_FACTOR = 0.1

_PATH_FIELDS = ("train_dir", "test_dir", "out", "resume", "cache_dir", "split_lists")

# Settings that define what a run learns. When resuming, these come from the run folder, because changing them
# halfway would silently train a different model on a different split.
RUN_DEFINING_FIELDS = (
    "arch", "image_size", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "warmup_epochs",
    "label_smoothing", "seed", "pretrained", "val_fraction", "split_lists", "max_images", "min_scale", "hflip",
)


@dataclass
class TrainConfig:
    """Settings of one training run. Paths may be given as strings, they are converted to Path."""

    train_dir: Path = Path("images/images")
    test_dir: Path | None = None
    arch: str = "custom_cnn"
    image_size: int | None = None            # pixels per side; None -> models.DEFAULT_IMAGE_SIZE[arch]
    epochs: int = 10
    batch_size: int = 64                     # images per step on each process
    lr: float | None = None                  # None -> default_lr()
    optimizer: str = "sgd"                   # "sgd" (with momentum) or "adamw"
    momentum: float = 0.9                    # SGD only
    weight_decay: float = 5e-4               # applied to weight matrices and kernels, not biases or norm scales
    warmup_epochs: float = 1.0               # linear warm-up length before the cosine decay, in epochs
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"                     # "auto", "cpu", "cuda", "cuda:N" or "mps"
    workers: int | None = None               # data preparation processes; None -> chosen by the data layer
    out: Path = Path("checkpoints")
    run_name: str | None = None              # None -> "<arch>-YYYYmmdd-HHMMSS"
    pretrained: bool = False
    resume: Path | None = None               # run folder to continue
    patience: int | None = None              # early stopping: epochs without a better val top-1
    val_fraction: float = 0.2
    use_cache: bool = True
    cache_dir: Path = Path(".cache/dogbreeds")
    split_lists: Path | None = None          # folder with train_list.mat and test_list.mat (official split)
    max_images: int | None = None            # stratified cap on the images used, for small machines
    min_scale: float = 0.25                  # smallest random crop area, as a fraction of the evaluation crop
    hflip: bool = True
    precision: str = "auto"                  # "auto", "fp32" or "bf16" (autocast); see runtime.resolve_precision
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # unknown keys kept from a newer version

    def __post_init__(self) -> None:
        for name in _PATH_FIELDS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                setattr(self, name, Path(value))

    def resolved_image_size(self) -> int:
        """Return the image side in pixels, the architecture's default when image_size is None."""
        if self.image_size is not None:
            return self.image_size

        from dogbreeds.models import DEFAULT_IMAGE_SIZE

        return DEFAULT_IMAGE_SIZE[self.arch]

    def default_lr(self, world_size: int = 1) -> float:
        """Return the default learning rate for this optimizer, global batch size and pretrained flag."""
        if self.optimizer == "adamw":
            lr = ADAMW_LR
        else:
            lr = SGD_LR_PER_64_IMAGES * self.batch_size * world_size / 64

        if self.pretrained:
            lr *= PRETRAINED_LR_FACTOR

        return lr

    def resolved(self, world_size: int = 1) -> "TrainConfig":
        """Return a copy with image_size and lr filled in, as stored in the run folder."""
        return dataclasses.replace(
            self,
            image_size=self.resolved_image_size(),
            lr=self.lr if self.lr is not None else self.default_lr(world_size),
            extra=dict(self.extra),
        )

    def validate(self) -> None:
        """Raise ValueError naming the first invalid setting and its valid range. Touches no files."""
        from dogbreeds.models import MODEL_NAMES, check_image_size
        from dogbreeds.runtime import check_precision

        if self.arch not in MODEL_NAMES:
            raise ValueError(f"Unknown architecture {self.arch!r}: expected one of {', '.join(MODEL_NAMES)}.")

        _check(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}.")
        _check(self.batch_size >= 2, f"batch size must be at least 2 (BatchNorm needs two images per batch), "
                                     f"got {self.batch_size}.")
        _check(self.lr is None or (math.isfinite(self.lr) and self.lr > 0),
               f"learning rate must be a positive number, got {self.lr}.")
        _check(self.optimizer in OPTIMIZERS,
               f"Unknown optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}.")
        _check(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}.")
        _check(self.weight_decay >= 0, f"weight decay must be zero or positive, got {self.weight_decay}.")
        _check(self.warmup_epochs >= 0, f"warm-up must be zero or more epochs, got {self.warmup_epochs}.")
        _check(0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}.")
        _check(0 < self.val_fraction < 1, f"validation fraction must be between 0 and 1 (exclusive), "
                                          f"got {self.val_fraction}.")
        _check(0 < self.min_scale <= 1, f"minimum crop scale must be in (0, 1], got {self.min_scale}.")
        check_precision(self.precision)
        _check(self.workers is None or self.workers >= 0, f"workers must be zero or positive, got {self.workers}.")
        _check(self.patience is None or self.patience >= 1, f"patience must be at least 1 epoch, "
                                                            f"got {self.patience}.")
        _check(self.max_images is None or self.max_images >= 2, f"max images must be at least 2, "
                                                                f"got {self.max_images}.")
        _check(self.seed >= 0, f"seed must be zero or positive, got {self.seed}.")
        _check(self.run_name is None or _is_plain_name(self.run_name),
               f"run name {self.run_name!r} must be a plain folder name without '/', '\\\\' or '..'.")

        if self.image_size is not None:
            _check(self.image_size >= 1, f"image size must be a positive number of pixels, got {self.image_size}.")
            check_image_size(self.arch, self.image_size)

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as JSON-ready plain types (paths as strings)."""
        result: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            if item.name == "extra":
                continue
            value = getattr(self, item.name)
            result[item.name] = str(value) if isinstance(value, Path) else value

        result.update(self.extra)
        return result

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build a config from to_dict() output; unknown keys are kept in `extra` with a warning."""
        known = {item.name for item in dataclasses.fields(cls)} - {"extra"}
        unknown = {key: value for key, value in data.items() if key not in known}
        if unknown:
            logger.warning("Ignoring unknown training settings %s (written by a newer version?)", sorted(unknown))

        return cls(**{key: value for key, value in data.items() if key in known}, extra=unknown)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message[0].upper() + message[1:])


def _is_plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name
