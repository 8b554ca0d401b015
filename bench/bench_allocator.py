"""Training throughput with and without the glibc allocator settings of the entry points, per architecture.

`python -m dogbreeds.train` calls runtime.configure_allocator() at start-up (mallopt M_MMAP_MAX=0 and a 2 GiB
M_TRIM_THRESHOLD); DOGBREEDS_MALLOC_TUNING=0 skips it. mallopt only affects the process that calls it, so every
measurement is a fresh training process. The two variants run interleaved with the order alternating per round
(off, on, on, off, off, on, ...) so that drift in machine load hits both alike, and the script reports medians.

Per run, images/s is the median over epochs 2..N from the run's history.json, which counts training batches only.
The sys share is the kernel's part of the child process's CPU time from wait4(), start-up and validation
included. Max RSS is ru_maxrss, the largest resident size of the child or one of its descendants. The
decoded-image cache is built before the first timed run.

    python bench/bench_allocator.py            # full run, about 3 minutes on 2 cores
    python bench/bench_allocator.py --quick    # short check of the script, figures not meaningful
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

VARIANTS = {"off": "0", "on": "1"}   # DOGBREEDS_MALLOC_TUNING value per variant


def build_cache(data_dir: Path, image_size: int, cache_dir: Path) -> None:
    """Build (or reuse) the decoded-image cache that the timed training runs will open."""
    from dogbreeds.data import DataSettings, prepare_data

    prepare_data(DataSettings(train_dir=data_dir, image_size=image_size, cache_dir=cache_dir))


def train_once(arch: str, data_dir: Path, epochs: int, cache_dir: Path, tuning: str) -> tuple[float, common.ChildResult]:
    """Run the training command line in a fresh process; return (median images/s of epochs 2..N, the child)."""
    from dogbreeds.checkpoint import read_history

    with tempfile.TemporaryDirectory(prefix="runs-", dir=common.OUT_DIR) as out:
        command = common.python_command(
            "-m", "dogbreeds.train", "--train_dir", str(data_dir), "--arch", arch, "--epochs", str(epochs),
            "--device", "cpu", "--out", out, "--run_name", "run", "--cache_dir", str(cache_dir),
        )
        child = common.run_child(command, env=common.child_env(DOGBREEDS_MALLOC_TUNING=tuning))
        if child.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed with exit code {child.returncode}:\n{child.stderr[-3000:]}")
        history = read_history(Path(out) / "run")

    rates = [entry["images_per_s"] for entry in history if entry["epoch"] > 1]
    return common.median(rates), child


def round_order(round_index: int) -> list[str]:
    """Return the variant order of a round: off-on in even rounds, on-off in odd ones."""
    order = list(VARIANTS)
    return order if round_index % 2 == 0 else order[::-1]


def parse_arguments() -> argparse.Namespace:
    from dogbreeds.models import MODEL_NAMES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES),
                        help="architectures to measure, each at its default image size (default: all)")
    parser.add_argument("--classes", type=int, default=120, help="class folders of the generated set (default: 120)")
    parser.add_argument("--per-class", type=int, default=10, help="generated images per class (default: 10)")
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs per training run, the first a warm-up; at least 2 (default: 3)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds per architecture; each round runs both variants once (default: 2)")
    parser.add_argument("--quick", action="store_true",
                        help="short check of the script: 120 classes x 3 images, 2 epochs, 1 round, custom_cnn")
    options = parser.parse_args()
    if options.quick:
        options.per_class, options.epochs, options.rounds, options.archs = 3, 2, 1, ["custom_cnn"]
    if options.epochs < 2:
        parser.error(f"--epochs must be at least 2 (epoch 1 is a warm-up), got {options.epochs}")
    if options.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {options.rounds}")
    return options


def main() -> int:
    options = parse_arguments()

    from dogbreeds.models import DEFAULT_IMAGE_SIZE

    common.print_machine()
    spec = common.ImageSetSpec(classes=options.classes, images=options.classes * options.per_class)
    data_dir = common.ensure_image_set(spec)
    cache_dir = common.OUT_DIR / "cache"
    print(f"data: {common.describe_image_set(data_dir)}")
    print(f"{options.rounds} round(s) per architecture, {options.epochs} epochs per run (epoch 1 not counted)\n")

    rows = []
    for arch in options.archs:
        build_cache(data_dir, DEFAULT_IMAGE_SIZE[arch], cache_dir)
        results: dict[str, list[tuple[float, common.ChildResult]]] = {name: [] for name in VARIANTS}
        for round_index in range(options.rounds):
            for name in round_order(round_index):
                rate, child = train_once(arch, data_dir, options.epochs, cache_dir, VARIANTS[name])
                results[name].append((rate, child))
                print(f"{arch} round {round_index + 1} tuning {name:>3}: {rate:7.1f} img/s, sys "
                      f"{100 * child.sys_fraction:4.1f}%, max RSS {common.gib(child.max_rss_bytes)} GiB, "
                      f"{child.wall_s:.0f} s")

        summary = {
            name: (
                common.median([rate for rate, _ in runs]),
                common.median([child.sys_fraction for _, child in runs]),
                common.median([child.max_rss_bytes for _, child in runs]),
            )
            for name, runs in results.items()
        }
        (rate_off, sys_off, rss_off), (rate_on, sys_on, rss_on) = summary["off"], summary["on"]
        rows.append([
            arch, DEFAULT_IMAGE_SIZE[arch], round(rate_off, 1), round(rate_on, 1), round(rate_on / rate_off, 3),
            round(100 * sys_off, 1), round(100 * sys_on, 1), round(rss_off / 2**30, 2), round(rss_on / 2**30, 2),
        ])

    print()
    common.print_table(
        ["arch", "px", "img/s off", "img/s on", "on/off", "sys % off", "sys % on", "max RSS GiB off",
         "max RSS GiB on"],
        rows,
    )
    print("\noff: DOGBREEDS_MALLOC_TUNING=0 (glibc defaults); on: the entry point's mallopt settings. Medians over "
          "rounds.")
    print(f"load average (1 min) at end: {common.load_average():.2f}")
    if options.quick:
        print("--quick: too few batches for meaningful figures; run without --quick to measure.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
