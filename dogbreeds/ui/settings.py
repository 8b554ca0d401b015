"""App settings read from environment variables, and the data-folder rule for Hugging Face Spaces.

Variables (all optional):
    SPACE_ID                      set by Hugging Face Spaces; turns on the Space limits below
    DOGBREEDS_DATA_ROOT           on a Space, the only folder the data folder may be in (default ./data)
    DOGBREEDS_DATA_DIR            data folder shown at start (default ./images/images, on a Space DATA_ROOT/Images)
    DOGBREEDS_CHECKPOINTS         folder of run folders (default ./checkpoints)
    DOGBREEDS_CACHE_DIR           decoded-image cache of the training data (default ./.cache/dogbreeds)
    DOGBREEDS_WORKERS             data preparation processes (default: chosen by the data layer; 0 = none)
    DOGBREEDS_SPACE_MAX_EPOCHS    epoch cap on a Space (default 3)
    DOGBREEDS_SPACE_MAX_IMAGES    image cap on a Space (default 2400, 20 per breed)
    DOGBREEDS_MAX_UPLOAD_MB       largest photo accepted by Compare, in MB (default 20)
    DOGBREEDS_MAX_IMAGE_PIXELS    largest photo accepted by Compare, in pixels (default 50,000,000)
    DOGBREEDS_HUB_REPO            Hub runs loaded at start: `owner/name[/subfolder][@revision]`, comma-separated
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_LOCAL_DATA_DIR = Path("images/images")
DEFAULT_SPACE_DATA_ROOT = Path("data")
DEFAULT_SPACE_MAX_EPOCHS = 3
DEFAULT_SPACE_MAX_IMAGES = 2400
DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000


class DataFolderRejected(ValueError):
    """A data folder outside the Space's data root; `path` and `root` name both."""

    def __init__(self, path: str, root: Path) -> None:
        super().__init__(
            f"Data folder {path!r} is outside the data root {str(root)!r} of this Space. Enter a folder inside "
            f"{str(root)!r}, for example {str(root / 'Images')!r}."
        )
        self.path = path
        self.root = root


@dataclass(frozen=True)
class AppSettings:
    """Everything the app reads from the environment, resolved once in main() or a test."""

    on_space: bool
    data_root: Path | None              # data folders must resolve inside it; None places no limit
    default_data_dir: Path
    checkpoints_dir: Path
    cache_dir: Path
    workers: int | None                 # None: the data layer picks the number of processes
    max_epochs: int | None              # None: no cap
    max_images: int | None              # None: every image
    max_upload_bytes: int
    max_image_pixels: int
    hub_repos: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "AppSettings":
        """Read the settings from `env` (default os.environ); raise ValueError naming a malformed variable."""
        env = os.environ if env is None else env
        on_space = bool(env.get("SPACE_ID", "").strip())

        data_root: Path | None = None
        if on_space or env.get("DOGBREEDS_DATA_ROOT", "").strip():
            data_root = Path(env.get("DOGBREEDS_DATA_ROOT", "").strip() or DEFAULT_SPACE_DATA_ROOT).resolve()

        default_dir = env.get("DOGBREEDS_DATA_DIR", "").strip()
        if default_dir:
            default_data_dir = Path(default_dir)
        elif data_root is not None:
            # download_stanford_dogs(data_root) extracts the class folders into data_root/Images.
            default_data_dir = data_root / "Images"
        else:
            default_data_dir = DEFAULT_LOCAL_DATA_DIR

        return cls(
            on_space=on_space,
            data_root=data_root,
            default_data_dir=default_data_dir,
            checkpoints_dir=Path(env.get("DOGBREEDS_CHECKPOINTS", "").strip() or "checkpoints"),
            cache_dir=Path(env.get("DOGBREEDS_CACHE_DIR", "").strip() or ".cache/dogbreeds"),
            workers=_read_optional_int(env, "DOGBREEDS_WORKERS", minimum=0),
            max_epochs=_read_int(env, "DOGBREEDS_SPACE_MAX_EPOCHS", DEFAULT_SPACE_MAX_EPOCHS) if on_space else None,
            max_images=_read_int(env, "DOGBREEDS_SPACE_MAX_IMAGES", DEFAULT_SPACE_MAX_IMAGES) if on_space else None,
            max_upload_bytes=int(_read_float(env, "DOGBREEDS_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB) * 1_000_000),
            max_image_pixels=_read_int(env, "DOGBREEDS_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS),
            hub_repos=env.get("DOGBREEDS_HUB_REPO", "").strip(),
        )


def resolve_data_folder(text: str | Path | None, settings: AppSettings) -> Path:
    """Turn the data-folder field into a path; with a data root, reject a path that resolves outside it.

    Relative paths are taken from the data root when there is one, else from the working directory. Symbolic
    links are resolved before the check, so a link inside the root that points outside it is rejected too.
    """
    raw = str(text or "").strip()
    if not raw:
        raw = str(settings.default_data_dir)
    path = Path(raw).expanduser()

    if settings.data_root is None:
        return path

    root = settings.data_root.resolve()
    candidate = path if path.is_absolute() else root / path
    resolved = candidate.resolve()
    if resolved != root and root not in resolved.parents:
        raise DataFolderRejected(raw, root)
    return resolved


def _read_int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a whole number; set an integer of at least {minimum} or unset it.") \
            from None
    if value < minimum:
        raise ValueError(f"{name}={text!r} must be at least {minimum}; set a larger integer or unset it.")
    return value


def _read_optional_int(env: Mapping[str, str], name: str, minimum: int) -> int | None:
    if not env.get(name, "").strip():
        return None
    return _read_int(env, name, default=minimum, minimum=minimum)


def _read_float(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number; set it to a positive number or unset it.") from None
    if not value > 0:
        raise ValueError(f"{name}={text!r} must be above 0; set a positive number or unset it.")
    return value
