"""Peak memory of a default training run on a Stanford-Dogs-sized generated set, the image cache included.

Generates 20,580 photo-like JPEGs in 120 class folders (171 or 172 per class). They are 250x190 pixels, not the
500x375 of most Stanford Dogs photos, to keep the generation short. At the default 64 px the cache stores 73 px
squares either way, so the cache size and the training batches are the same as with full-size photos. Then runs
`python -m dogbreeds.train` with default settings (custom_cnn, 64 px, batch 64) for 1 epoch in a child process,
with a new, empty cache folder so that the cache build is part of the measured run.

Every 0.2 s a thread sums VmRSS over the child and all its descendants (cache-building and loader worker
processes). That sum counts pages shared between processes (the memory-mapped cache, libraries) once per
process, so it is an upper bound. The Pss sum splits shared pages and estimates the real total. ru_maxrss is the
largest single process.

Target: peak summed RSS < 4 GiB.

    python bench/bench_memory.py            # full run, about 5 minutes on 2 cores (plus 1 minute of generation)
    python bench/bench_memory.py --quick    # short check of the script: 1,200 images
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

LIMIT_BYTES = 4 * 2**30


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=common.STANFORD_DOGS_IMAGES,
                        help=f"generated images (default: {common.STANFORD_DOGS_IMAGES:,}, as Stanford Dogs)")
    parser.add_argument("--classes", type=int, default=common.STANFORD_DOGS_CLASSES,
                        help=f"class folders (default: {common.STANFORD_DOGS_CLASSES})")
    parser.add_argument("--width", type=int, default=250, help="generated photo width in pixels (default: 250)")
    parser.add_argument("--height", type=int, default=190, help="generated photo height in pixels (default: 190)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between memory samples (default: 0.2)")
    parser.add_argument("--quick", action="store_true", help="short check of the script: 1,200 images")
    options = parser.parse_args()
    if options.quick:
        options.images = 1200
    return options


def main() -> int:
    options = parse_arguments()
    common.print_machine()

    spec = common.ImageSetSpec(classes=options.classes, images=options.images, width=options.width,
                               height=options.height)
    data_dir = common.ensure_image_set(spec)
    print(f"data: {common.describe_image_set(data_dir)}")
    print(f"note: generated photos are {options.width}x{options.height} to keep generation short; the cache and "
          f"the batches depend only on the 64 px training size\n")

    common.OUT_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="memory-", dir=common.OUT_DIR) as work:
        command = common.python_command(
            "-m", "dogbreeds.train", "--train_dir", str(data_dir), "--epochs", "1", "--out", str(Path(work) / "runs"),
            "--cache_dir", str(Path(work) / "cache"), "--device", "cpu",
        )
        print("command: " + " ".join(command))
        child = common.run_child(command, env=common.child_env(), sample_memory=True, interval_s=options.interval)
    if child.returncode != 0:
        print(child.stderr[-3000:], file=sys.stderr)
        print(f"error: the training run failed with exit code {child.returncode}", file=sys.stderr)
        return 2

    passed = child.peak_tree_rss_bytes < LIMIT_BYTES
    print(f"training run: {child.wall_s:.0f} s wall, {child.user_s:.0f} s user, {child.sys_s:.0f} s sys CPU\n")
    common.print_table(
        ["measure", "GiB"],
        [
            ["peak RSS, summed over the process tree", round(child.peak_tree_rss_bytes / 2**30, 2)],
            ["peak Pss, summed over the process tree", round(child.peak_tree_pss_bytes / 2**30, 2)],
            ["largest single process (ru_maxrss)", round(child.max_rss_bytes / 2**30, 2)],
            ["limit", round(LIMIT_BYTES / 2**30, 2)],
        ],
    )
    print(f"\npeak summed RSS {common.gib(child.peak_tree_rss_bytes)} GiB vs limit 4 GiB: {common.verdict(passed)}")
    print(f"load average (1 min) at end: {common.load_average():.2f}")
    if options.quick:
        print(f"--quick: {options.images:,} images instead of {common.STANFORD_DOGS_IMAGES:,}; run without --quick "
              f"to measure.")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
