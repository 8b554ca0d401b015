"""Compute efficiency of resnet18 training on the CPU against torch.mm, measured side by side in one run.

The FLOPs of one training step (forward and backward of a batch of 64 at 128 px) are counted with
torch.utils.flop_counter, which counts 2 FLOPs per multiply-accumulate of convolutions and matrix products and
leaves out element-wise work. Dividing them by the measured time of the full training step as fit() takes it
(forward, backward, optimizer and schedule step, channels_last) gives the model's GFLOP/s. The reference is
torch.mm on large square matrices of the same dtype with all torch threads, measured before and after the model
steps. Both precisions of dogbreeds.train are measured: fp32, and bf16 autocast where the CPU has bf16
instructions.

Target: for the precision that fit() uses by default on this machine (--precision auto), resnet18 GFLOP/s /
torch.mm GFLOP/s in that dtype >= 0.85.

A profile of a few more steps then gives the ceiling that torch's own kernels set: the same FLOPs divided by the
time of the convolution and matrix-product kernels alone (forward and backward), as if batch norm, ReLU, pooling,
the optimizer and Python took no time at all. A ceiling below the target means that no change to the training
loop can reach it with these kernels.

    python bench/bench_flops.py            # full run, about 1 minute on 2 cores
    python bench/bench_flops.py --quick    # short check of the script, figures not meaningful
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

TARGET_RATIO = 0.85


def training_flops(step: common.TrainingStep) -> int:
    """Count the FLOPs of one forward and backward pass of `step`'s model on one batch (optimizer excluded)."""
    from torch.utils.flop_counter import FlopCounterMode

    images, labels = step.random_batch(seed=999)
    with FlopCounterMode(display=False) as counter:
        loss = step.criterion(step.model(images), labels)
        loss.backward()
    step.optimizer.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def step_seconds(step: common.TrainingStep, steps: int, warmup: int) -> list[float]:
    """Time `steps` full training steps, each on a different random batch, after `warmup` untimed ones."""
    batches = [step.random_batch(seed) for seed in range(min(steps, 8))]
    for index in range(warmup):
        step(*batches[index % len(batches)])

    seconds = []
    for index in range(steps):
        images, labels = batches[index % len(batches)]
        started = time.perf_counter()
        step(images, labels)
        seconds.append(time.perf_counter() - started)
    return seconds


# Operators that contain all the FLOPs that flop_counter counts for resnet18: the convolutions and the
# classifier's matrix products, forward and backward.
MATRIX_KERNELS = frozenset({
    "aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution", "aten::convolution_overrideable",
    "aten::addmm", "aten::mm", "aten::bmm", "aten::linear",
})


def kernel_seconds(step: common.TrainingStep, steps: int) -> tuple[float, float]:
    """Profile `steps` training steps; return (seconds per step in MATRIX_KERNELS, seconds per step in all operators).

    Self times are summed, so a kernel that calls another counts once. The profiler adds a little time to each
    operator. That inflates the share of the many small operators but hardly changes the kernels' own time.
    """
    from torch.profiler import ProfilerActivity, profile

    batches = [step.random_batch(seed) for seed in range(min(steps, 8))]
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for index in range(steps):
            step(*batches[index % len(batches)])

    events = profiler.key_averages()
    matrix = sum(event.self_cpu_time_total for event in events if event.key in MATRIX_KERNELS)
    total = sum(event.self_cpu_time_total for event in events)
    return matrix / 1e6 / steps, total / 1e6 / steps


def matmul_gflops(size: int, repeats: int, dtype: "torch.dtype") -> list[float]:  # noqa: F821
    """Return the GFLOP/s of `repeats` torch.mm calls on [size, size] matrices of `dtype`, after one warm-up."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(dtype)
    b = torch.randn(size, size, generator=generator).to(dtype)
    out = torch.empty(size, size, dtype=dtype)
    torch.mm(a, b, out=out)

    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b, out=out)
        rates.append(2 * size**3 / (time.perf_counter() - started) / 1e9)
    return rates


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18", help="architecture (default: resnet18)")
    parser.add_argument("--image-size", type=int, default=128, help="input side in pixels (default: 128)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per training step (default: 64)")
    parser.add_argument("--classes", type=int, default=120, help="classifier outputs (default: 120)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps (default: 20)")
    parser.add_argument("--matmul-size", type=int, default=2048, help="side of the square matrices (default: 2048)")
    parser.add_argument("--matmul-repeats", type=int, default=10,
                        help="timed torch.mm calls before and after the model steps, each (default: 10)")
    parser.add_argument("--profile-steps", type=int, default=5,
                        help="training steps profiled for the kernel ceiling (default: 5)")
    parser.add_argument("--quick", action="store_true",
                        help="short check of the script: 3 steps of 16 images, 1024 matrices; figures not meaningful")
    options = parser.parse_args()
    if options.quick:
        options.steps, options.batch_size, options.matmul_size, options.matmul_repeats = 3, 16, 1024, 3
        options.profile_steps = 2
    return options


def measure(options: argparse.Namespace, precision: str, flops: int) -> dict:
    """Time the training step in `precision` between two torch.mm series in the matching dtype."""
    import torch

    step = common.TrainingStep(options.arch, options.image_size, options.classes, options.batch_size,
                               precision=precision)
    dtype = step.autocast_dtype or torch.float32
    matmul_before = matmul_gflops(options.matmul_size, options.matmul_repeats, dtype)
    seconds = step_seconds(step, options.steps, warmup=3)
    matmul_after = matmul_gflops(options.matmul_size, options.matmul_repeats, dtype)
    kernel_time, profiled_time = kernel_seconds(step, options.profile_steps)

    step_time = common.median(seconds)
    return {
        "kernels": flops / kernel_time / 1e9,
        "kernel_share": kernel_time / profiled_time,
        "precision": precision,
        "dtype": str(dtype).removeprefix("torch."),
        "step_ms": 1000 * step_time,
        "model": flops / step_time / 1e9,
        "matmul": common.median(matmul_before + matmul_after),
        "matmul_before": common.median(matmul_before),
        "matmul_after": common.median(matmul_after),
    }


def main() -> int:
    options = parse_arguments()

    import torch

    from dogbreeds.runtime import configure_allocator, resolve_precision

    configure_allocator()
    common.print_machine()

    cpu = torch.device("cpu")
    default_precision = "fp32" if resolve_precision("auto", cpu) is None else "bf16"
    precisions = ["fp32"] + (["bf16"] if torch.ops.mkldnn._is_mkldnn_bf16_supported() else [])
    print(f"fit() trains in {default_precision} by default on this machine (--precision auto); measuring "
          f"{', '.join(precisions)}")

    flops = training_flops(common.TrainingStep(options.arch, options.image_size, options.classes,
                                               options.batch_size, precision="fp32"))
    print(f"{options.arch} at {options.image_size} px, batch {options.batch_size}: {flops / 1e9:.2f} GFLOP per "
          f"training step (forward + backward, torch.utils.flop_counter), {options.steps} timed steps per precision")

    results = {precision: measure(options, precision, flops) for precision in precisions}
    fp32_matmul = results["fp32"]["matmul"]
    rows = []
    for result in results.values():
        print(f"{result['precision']}: median step {result['step_ms']:.0f} ms; torch.mm {options.matmul_size}x"
              f"{options.matmul_size} {result['dtype']} on {torch.get_num_threads()} threads: median "
              f"{result['matmul_before']:.1f} GFLOP/s before the steps, {result['matmul_after']:.1f} after; "
              f"convolution and matrix kernels {100 * result['kernel_share']:.0f} % of the profiled step")
        rows.append([
            result["precision"] + (" (fit default)" if result["precision"] == default_precision else ""),
            round(result["model"], 1), round(result["matmul"], 1), round(result["model"] / result["matmul"], 3),
            round(result["model"] / fp32_matmul, 3), round(result["kernels"] / result["matmul"], 3),
        ])

    print()
    common.print_table(
        ["precision", f"{options.arch} GFLOP/s", "torch.mm GFLOP/s, same dtype", "ratio", "ratio to fp32 torch.mm",
         "ceiling: kernels alone / torch.mm"],
        rows,
    )
    default = results[default_precision]
    ratio = default["model"] / default["matmul"]
    print(f"\nratio {options.arch} / torch.mm in fit's default precision ({default_precision}): {ratio:.3f} "
          f"(target >= {TARGET_RATIO}): {common.verdict(ratio >= TARGET_RATIO)}")
    ceiling = default["kernels"] / default["matmul"]
    if ceiling < TARGET_RATIO:
        print(f"the convolution and matrix kernels alone reach {ceiling:.3f} of torch.mm in {default_precision}, "
              f"below the target even with every other operator taking no time")
    print(f"load average (1 min) at end: {common.load_average():.2f}")
    if options.quick:
        print("--quick: smaller batch and matrices; run without --quick to measure.")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
