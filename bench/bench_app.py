"""Latency of the app: one Compare request through both default models, and `python app.py` to its first page.

Compare: two run folders (custom_cnn and resfcn18, 64 px, 120 classes, freshly initialized weights) are written
in the run-folder format to a temporary checkpoints folder. One real photo (default: Gradio's bundled
cheetah.jpg, 502x343) then goes through AppHandlers.compare, the app's handler, which reads and decodes the upload
and predicts with both runs. When dogbreeds.ui cannot be imported, Predictor.predict on both runs is timed
instead, and the output names that path. The first call (which loads both models) is reported apart, and the
target applies to the median of the following calls. The same calls with torch limited to 1 thread follow as
a reference without a target.

Start-up: `python app.py` in a child process with GRADIO_SERVER_NAME=127.0.0.1 and a free GRADIO_SERVER_PORT,
timed from process start to the first HTTP 200 on / from 127.0.0.1. The child is then terminated by its PID.

Targets: Compare median <= 60 ms; start-up <= 15 s (median over starts).

    python bench/bench_app.py            # full run, about 1 minute on 2 cores
    python bench/bench_app.py --quick    # short check of the script: fewer repetitions and one start
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

COMPARE_TARGET_MS = 60.0
STARTUP_TARGET_S = 15.0
RUN_ARCHS = ("custom_cnn", "resfcn18")
IMAGE_SIZE = 64


def default_photo() -> Path:
    """Return the path of cheetah.jpg among Gradio's bundled media assets."""
    import gradio

    return Path(gradio.__file__).parent / "media_assets" / "images" / "cheetah.jpg"


def write_runs(checkpoints: Path, classes: int) -> dict[str, Path]:
    """Save freshly initialized models as run folders under `checkpoints`; return {architecture: run folder}."""
    import torch

    from dogbreeds.checkpoint import MODEL_FILE, build_run_config, save_weights, write_history, write_run_config
    from dogbreeds.folders import display_name
    from dogbreeds.models import create_model

    keys = [common.class_folder_name(index) for index in range(classes)]
    runs = {}
    for arch in RUN_ARCHS:
        torch.manual_seed(0)
        model = create_model(arch, classes, image_size=IMAGE_SIZE)
        run_dir = checkpoints / f"{arch}-bench"
        run_dir.mkdir(parents=True)
        save_weights(run_dir / MODEL_FILE, model)
        write_history(run_dir, [])
        write_run_config(run_dir, build_run_config(model, class_keys=keys, class_names=[display_name(k) for k in keys]))
        runs[arch] = run_dir
    return runs


def compare_function(checkpoints: Path, runs: dict[str, Path], photo: Path) -> tuple[Callable[[], None], str]:
    """Return a function that classifies `photo` with both runs, and the name of the code path it uses."""
    try:
        from dogbreeds.ui.handlers import AppHandlers
        from dogbreeds.ui.settings import AppSettings
    except ImportError as error:
        from dogbreeds.predict import Predictor

        predictors = [Predictor.from_run(run_dir) for run_dir in runs.values()]

        def predict_both() -> None:
            for predictor in predictors:
                predictor.predict(str(photo), k=5)

        return predict_both, f"Predictor.predict on both runs (dogbreeds.ui not importable: {error})"

    handlers = AppHandlers(AppSettings.from_env({"DOGBREEDS_CHECKPOINTS": str(checkpoints)}))
    cnn_run, fcn_run = str(runs["custom_cnn"]), str(runs["resfcn18"])

    def compare() -> None:
        cnn_top, _, fcn_top, _, notes = handlers.compare(str(photo), cnn_run, fcn_run)
        if cnn_top is None or fcn_top is None:
            raise RuntimeError(f"Compare returned no prediction for {photo}: {notes}")

    return compare, "AppHandlers.compare (the app's Compare handler)"


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Return the value at `fraction` (0-1) of an ascending list, by the nearest lower rank."""
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def startup_seconds(env_overrides: dict[str, str], timeout_s: float) -> float:
    """Start `python app.py`, return the seconds until / returns HTTP 200, then terminate the process."""
    port = free_port()
    env = common.child_env(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), **env_overrides)
    url = f"http://127.0.0.1:{port}/"
    # An empty ProxyHandler keeps urllib from sending the request to a proxy named in the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        process = subprocess.Popen(common.python_command("app.py"), cwd=common.REPO_ROOT, env=env,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                elapsed = time.perf_counter() - started
                if process.poll() is not None:
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-3000:]
                    raise RuntimeError(f"python app.py exited with code {process.returncode} before serving:\n{tail}")
                if elapsed > timeout_s:
                    raise TimeoutError(f"python app.py did not serve {url} within {timeout_s:.0f} s")
                try:
                    with opener.open(url, timeout=2) as response:
                        if response.status == 200:
                            return time.perf_counter() - started
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                time.sleep(0.1)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo", type=Path, help="photo to classify (default: Gradio's bundled cheetah.jpg)")
    parser.add_argument("--classes", type=int, default=120, help="classes of the two runs (default: 120)")
    parser.add_argument("--repeats", type=int, default=50,
                        help="timed Compare calls after the first one; at least 30 for the target (default: 50)")
    parser.add_argument("--starts", type=int, default=3, help="timed starts of python app.py (default: 3)")
    parser.add_argument("--start-timeout", type=float, default=120.0,
                        help="seconds to wait for the first page before giving up (default: 120)")
    parser.add_argument("--quick", action="store_true", help="short check of the script: 5 Compare calls, 1 start")
    options = parser.parse_args()
    if options.quick:
        options.repeats, options.starts = 5, 1
    if options.repeats < 1 or options.starts < 1:
        parser.error(f"--repeats and --starts must be at least 1, got {options.repeats} and {options.starts}")
    return options


def main() -> int:
    options = parse_arguments()

    import torch
    from PIL import Image

    from dogbreeds.runtime import configure_allocator

    # The app's main() applies the allocator settings too, so the in-process handler runs under the same ones.
    configure_allocator()
    common.print_machine()
    photo = options.photo or default_photo()
    with Image.open(photo) as image:
        print(f"photo: {photo} ({image.width}x{image.height} {image.format}, {photo.stat().st_size / 1024:.0f} KiB)")

    with tempfile.TemporaryDirectory(prefix="dogbreeds-bench-app-") as folder:
        checkpoints = Path(folder) / "checkpoints"
        runs = write_runs(checkpoints, options.classes)
        compare, path_name = compare_function(checkpoints, runs, photo)
        print(f"Compare path: {path_name}; runs {', '.join(f'{arch} {IMAGE_SIZE} px' for arch in RUN_ARCHS)}, "
              f"{options.classes} classes, {torch.get_num_threads()} torch threads")

        first_ms = 1000 * common.call_with_timing(compare)
        compare_ms = sorted(1000 * common.call_with_timing(compare) for _ in range(options.repeats))

        # Reference only: the same calls with one intra-op thread, which the app does not set.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        one_thread_ms = sorted(1000 * common.call_with_timing(compare) for _ in range(options.repeats))
        torch.set_num_threads(threads)

        starts = []
        for index in range(options.starts):
            seconds = startup_seconds({"DOGBREEDS_CHECKPOINTS": str(checkpoints)}, options.start_timeout)
            print(f"start {index + 1}: first page after {seconds:.2f} s")
            starts.append(seconds)

    compare_median = common.median(compare_ms)
    start_median = common.median(starts)
    p90 = percentile(compare_ms, 0.9)
    print()
    common.print_table(
        ["measure", "median", "other", "target", "result"],
        [
            [f"Compare, {options.repeats} calls (ms)", round(compare_median, 1),
             f"first call {first_ms:.0f} ms, p90 {p90:.1f} ms", f"<= {COMPARE_TARGET_MS:g}",
             common.verdict(compare_median <= COMPARE_TARGET_MS)],
            ["Compare with 1 torch thread, for reference (ms)", round(common.median(one_thread_ms), 1),
             f"p90 {percentile(one_thread_ms, 0.9):.1f} ms", "none", "-"],
            [f"python app.py to first page, {options.starts} starts (s)", round(start_median, 2),
             f"max {max(starts):.2f} s", f"<= {STARTUP_TARGET_S:g}", common.verdict(start_median <= STARTUP_TARGET_S)],
        ],
    )
    print(f"\nload average (1 min) at end: {common.load_average():.2f}")
    if options.quick and options.repeats < 30:
        print("--quick: fewer than 30 Compare calls; run without --quick to measure.")
    passed = compare_median <= COMPARE_TARGET_MS and start_median <= STARTUP_TARGET_S
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
