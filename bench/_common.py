"""Shared helpers of the benchmark scripts: generated photo-like image sets, the training step, child-process
measurement (CPU times, peak memory of a process tree) and plain-text tables.

The scripts import this module as ``_common`` after putting ``bench/`` and the repository root on ``sys.path``,
so they run as ``python bench/<script>.py`` from any folder.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Generated data, caches and run folders; git ignores this folder.
OUT_DIR = REPO_ROOT / "bench" / "out"

# The most common Stanford Dogs photo size (width, height).
PHOTO_SIZE = (500, 375)

# Stanford Dogs: 20,580 images in 120 breed folders.
STANFORD_DOGS_IMAGES = 20_580
STANFORD_DOGS_CLASSES = 120

# Stanford Dogs folder names start with a WordNet id; generated folders follow the same pattern.
_FIRST_WORDNET_ID = 2_085_620

_MARKER_FILE = "complete.json"


# ---------------------------------------------------------------------------------------------------------------
# Machine description


def machine_lines() -> list[str]:
    """Describe the CPU, memory, load and library versions that a benchmark's figures depend on."""
    import torch

    try:
        import torchvision

        torchvision_version = torchvision.__version__
    except ImportError:
        torchvision_version = "not installed"

    from dogbreeds.cache import usable_cores

    usable = usable_cores()
    lines = [
        f"machine: {_cpu_model()}, {os.cpu_count()} logical cores ({usable} usable), {_memory_gib():.0f} GiB memory",
        f"versions: Python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision_version}, "
        f"{torch.get_num_threads()} torch threads",
        f"load average (1 min) at start: {load_average():.2f}",
    ]
    if torch.cuda.is_available():
        lines.append(f"GPU: {torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}")
    return lines


def print_machine() -> None:
    """Print machine_lines(), one per line, then a blank line."""
    for line in machine_lines():
        print(line)
    print()


def load_average() -> float:
    """Return the 1-minute load average, or NaN where the platform has none."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return float("nan")
    return pages * page_size / 2**30


# ---------------------------------------------------------------------------------------------------------------
# Generated photo-like image sets


@dataclass(frozen=True)
class ImageSetSpec:
    """Parameters of a generated image folder; equal specs share one folder under bench/out/data."""

    classes: int
    images: int
    width: int = PHOTO_SIZE[0]
    height: int = PHOTO_SIZE[1]
    quality: int = 90
    seed: int = 0

    @property
    def folder_name(self) -> str:
        return f"photos-{self.classes}c-{self.images}i-{self.width}x{self.height}-q{self.quality}-s{self.seed}"

    def class_counts(self) -> list[int]:
        """Return images per class: as even as possible, the first classes taking one extra."""
        base, extra = divmod(self.images, self.classes)
        return [base + (1 if index < extra else 0) for index in range(self.classes)]


def class_folder_name(index: int) -> str:
    """Return a Stanford-Dogs-style folder name, such as "n02085620-Breed_000"."""
    return f"n{_FIRST_WORDNET_ID + index:08d}-Breed_{index:03d}"


def photo_like_jpeg(rng: np.random.Generator, width: int, height: int, class_index: int, quality: int) -> bytes:
    """Encode one synthetic photo as JPEG: a smooth background, a few blurred shapes, grain and fine texture.

    Real photos compress to tens of kilobytes because they mix smooth regions with sensor noise. Pure noise would
    make decoding unrealistically slow and flat colour unrealistically fast. The class index tints the shapes.
    """
    from PIL import Image, ImageDraw, ImageFilter

    # Background: a 4x6 grid of random colours upsampled with bicubic interpolation gives smooth gradients.
    grid = rng.integers(40, 220, size=(4, 6, 3), dtype=np.uint8)
    image = Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC)

    draw = ImageDraw.Draw(image)
    hue = np.array([(class_index * 67) % 256, (class_index * 131) % 256, (class_index * 29) % 256])
    for _ in range(int(rng.integers(4, 9))):
        colour = np.clip(hue + rng.integers(-40, 41, size=3), 0, 255)
        x, y = rng.uniform(-0.1, 0.9) * width, rng.uniform(-0.1, 0.9) * height
        box = (x, y, x + rng.uniform(0.1, 0.5) * width, y + rng.uniform(0.1, 0.5) * height)
        if rng.random() < 0.6:
            draw.ellipse(box, fill=tuple(int(c) for c in colour))
        else:
            draw.rectangle(box, fill=tuple(int(c) for c in colour))
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(1.0, 3.0))))

    # Grain: small integer noise on every pixel, like the sensor noise of a camera photo.
    pixels = np.asarray(image, dtype=np.int16)
    pixels = pixels + rng.integers(-7, 8, size=pixels.shape, dtype=np.int16)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _write_photos(task: tuple[str, int, int, int, int, list[tuple[int, int]]]) -> int:
    """Write the (image number, class) pairs of one task; runs in a worker process."""
    root, width, height, quality, seed, items = task
    for number, class_index in items:
        rng = np.random.default_rng([seed, number])
        data = photo_like_jpeg(rng, width, height, class_index, quality)
        path = Path(root) / class_folder_name(class_index) / f"img_{number:06d}.jpg"
        path.write_bytes(data)
    return len(items)


def ensure_image_set(spec: ImageSetSpec, workers: int | None = None, base: Path | None = None) -> Path:
    """Return the folder of generated JPEGs for `spec`, generating it first unless a finished one exists.

    A folder counts as finished when its marker file records the same spec, so an interrupted generation is
    started again. Generation uses `workers` processes (default: all usable cores).
    """
    from dogbreeds.cache import usable_cores

    root = (base or OUT_DIR / "data") / spec.folder_name
    marker = root / _MARKER_FILE
    if marker.is_file() and json.loads(marker.read_text()) == spec.__dict__:
        return root

    counts = spec.class_counts()
    for class_index in range(spec.classes):
        (root / class_folder_name(class_index)).mkdir(parents=True, exist_ok=True)

    labels = [class_index for class_index, count in enumerate(counts) for _ in range(count)]
    items = list(enumerate(labels))
    chunk = 64
    tasks = [
        (str(root), spec.width, spec.height, spec.quality, spec.seed, items[start : start + chunk])
        for start in range(0, len(items), chunk)
    ]

    workers = workers or usable_cores()
    started = time.perf_counter()
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_photos, tasks):
                pass
    else:
        for task in tasks:
            _write_photos(task)

    marker.write_text(json.dumps(spec.__dict__))
    seconds = time.perf_counter() - started
    print(f"generated {spec.images:,} JPEGs ({spec.width}x{spec.height}, quality {spec.quality}) in {spec.classes} "
          f"class folders in {seconds:.1f} s: {root}")
    return root


def describe_image_set(root: Path) -> str:
    """Return a line with the image count, class count and mean file size of a generated folder."""
    files = list(root.glob("*/*.jpg"))
    classes = len({path.parent for path in files})
    mean_kib = statistics.fmean(path.stat().st_size for path in files) / 1024 if files else 0.0
    return f"{len(files):,} JPEGs in {classes} class folders, mean {mean_kib:.0f} KiB per file ({root})"


# ---------------------------------------------------------------------------------------------------------------
# The training step of fit(), on tensors the caller provides


class TrainingStep:
    """One optimizer step as fit() takes it on the CPU: same model, optimizer, schedule, loss, memory format and
    precision.

    The optimizer and learning-rate schedule come from dogbreeds.trainer with TrainConfig defaults, and the
    precision from dogbreeds.runtime.resolve_precision, so this step and fit() do the same arithmetic per batch.
    Only the data source differs.
    """

    def __init__(self, arch: str, image_size: int, num_classes: int, batch_size: int = 64, seed: int = 0,
                 precision: str = "auto") -> None:
        import torch
        from torch import nn

        from dogbreeds.config import TrainConfig
        from dogbreeds.models import create_model, wants_channels_last
        from dogbreeds.runtime import autocast, resolve_precision
        from dogbreeds.trainer import build_optimizer, cosine_with_warmup

        torch.manual_seed(seed)
        self.device = torch.device("cpu")
        self.autocast_dtype = resolve_precision(precision, self.device)
        self.autocast = autocast
        config = TrainConfig(arch=arch, image_size=image_size, batch_size=batch_size).resolved()
        self.model = create_model(arch, num_classes, image_size=image_size)
        self.channels_last = wants_channels_last(self.model)
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format).train()
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine_with_warmup(100, 10_000))
        self.criterion = nn.CrossEntropyLoss()
        self.arch = arch
        self.image_size = image_size
        self.num_classes = num_classes
        self.batch_size = batch_size

    def random_batch(self, seed: int = 0) -> tuple["torch.Tensor", "torch.Tensor"]:  # noqa: F821
        """Return normalized-looking float32 images [B, 3, S, S] (in the step's memory format) and int64 labels."""
        import torch

        generator = torch.Generator().manual_seed(seed)
        images = torch.randn(self.batch_size, 3, self.image_size, self.image_size, generator=generator)
        labels = torch.randint(0, self.num_classes, (self.batch_size,), generator=generator)
        return images.contiguous(memory_format=self.memory_format), labels

    def __call__(self, images: "torch.Tensor", labels: "torch.Tensor") -> float:  # noqa: F821
        """Run forward, backward and the optimizer step on one batch; return the loss."""
        import torch

        images = images.to(memory_format=self.memory_format)
        with self.autocast(self.device, self.autocast_dtype):
            logits = self.model(images)
        loss = self.criterion(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            return float(loss)


def images_per_second_on_tensors(step: TrainingStep, steps_per_block: int, blocks: int, warmup: int = 3) -> list[float]:
    """Time `blocks` blocks of `steps_per_block` steps on in-memory batches; return images/s per block.

    Each step of a block gets a different random batch, as in an epoch. Stepping on one batch over and over would
    let the model memorize it, which an epoch of fit() never does.
    """
    batches = [step.random_batch(seed) for seed in range(steps_per_block)]
    for images, labels in batches[:warmup]:
        step(images, labels)

    rates = []
    for _ in range(blocks):
        started = time.perf_counter()
        for images, labels in batches:
            step(images, labels)
        rates.append(steps_per_block * step.batch_size / (time.perf_counter() - started))
    return rates


# ---------------------------------------------------------------------------------------------------------------
# Child processes: CPU times and peak memory


@dataclass
class ChildResult:
    """Outcome of one measured child process. Times in seconds, memory in bytes."""

    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_bytes: int          # ru_maxrss: the largest single process of the tree
    peak_tree_rss_bytes: int    # max over samples of the summed VmRSS of the process and its descendants
    peak_tree_pss_bytes: int    # the same for Pss, which splits shared pages between the processes
    stdout: str
    stderr: str

    @property
    def sys_fraction(self) -> float:
        """Return the share of the child's CPU time spent in the kernel."""
        total = self.user_s + self.sys_s
        return self.sys_s / total if total > 0 else float("nan")


def run_child(command: Sequence[str], env: dict[str, str] | None = None, cwd: Path = REPO_ROOT,
              sample_memory: bool = False, interval_s: float = 0.2) -> ChildResult:
    """Run `command` to completion and return its exit code, wall time, CPU times and (optionally) peak memory.

    CPU times and ru_maxrss come from wait4(), so they cover the child and every descendant it waited for. With
    `sample_memory`, a thread sums VmRSS and Pss over the process tree every `interval_s` seconds.
    """
    with open(os.devnull, "rb") as stdin, _temporary_text() as stdout, _temporary_text() as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(list(command), cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr)
        sampler = TreeMemorySampler(process.pid, interval_s) if sample_memory else None
        if sampler is not None:
            sampler.start()

        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            if sampler is not None:
                sampler.stop()
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)

        stdout.seek(0)
        stderr.seek(0)
        return ChildResult(
            returncode=process.returncode,
            wall_s=wall,
            user_s=usage.ru_utime,
            sys_s=usage.ru_stime,
            max_rss_bytes=usage.ru_maxrss * 1024,  # Linux reports kibibytes
            peak_tree_rss_bytes=sampler.peak_rss if sampler else 0,
            peak_tree_pss_bytes=sampler.peak_pss if sampler else 0,
            stdout=stdout.read(),
            stderr=stderr.read(),
        )


def _temporary_text():
    import tempfile

    return tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")


class TreeMemorySampler:
    """Background thread recording the peak of the summed memory of a process and all its descendants."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-memory-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = [self.pid, *descendants(self.pid)]
            rss = sum(_status_kib(pid, "VmRSS") for pid in pids) * 1024
            pss = sum(_pss_kib(pid) for pid in pids) * 1024
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_processes = max(self.peak_processes, len(pids))
            self._stop.wait(self.interval_s)


def descendants(pid: int) -> list[int]:
    """Return the ids of every live descendant of `pid`, read from the parent ids in /proc/<id>/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # The command name in brackets may contain spaces, so the fields after it are split from the last ')'.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))

    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        for child in children.get(current, []):
            found.append(child)
            pending.append(child)
    return found


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


# ---------------------------------------------------------------------------------------------------------------
# Output


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print rows under headers in aligned columns: text left-aligned, numbers right-aligned."""
    cells = [[str(value) for value in row] for row in rows]
    widths = [max(len(headers[column]), *(len(row[column]) for row in cells)) for column in range(len(headers))]

    def line(values: Sequence[str], raw: Sequence[object] | None) -> str:
        parts = []
        for column, value in enumerate(values):
            numeric = raw is not None and isinstance(raw[column], int | float)
            parts.append(value.rjust(widths[column]) if numeric else value.ljust(widths[column]))
        return "  ".join(parts).rstrip()

    print(line(headers, None))
    print("  ".join("-" * width for width in widths))
    for raw, row in zip(rows, cells):
        print(line(row, raw))


def verdict(passed: bool) -> str:
    """Return "PASS" or "FAIL"."""
    return "PASS" if passed else "FAIL"


def median(values: Sequence[float]) -> float:
    """Return the median, or NaN for an empty sequence."""
    return statistics.median(values) if values else float("nan")


def gib(value_bytes: float) -> str:
    """Format bytes as GiB with two decimals."""
    return f"{value_bytes / 2**30:.2f}"


def python_command(*arguments: str) -> list[str]:
    """Return a command that runs this interpreter with `arguments`."""
    return [sys.executable, *arguments]


def child_env(**overrides: str) -> dict[str, str]:
    """Return a copy of the environment with the repository on PYTHONPATH and `overrides` applied."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env.update(overrides)
    return env


def call_with_timing(function: Callable[[], object]) -> float:
    """Return the seconds one call of `function` takes."""
    started = time.perf_counter()
    function()
    return time.perf_counter() - started
