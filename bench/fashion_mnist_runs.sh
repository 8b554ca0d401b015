#!/usr/bin/env bash
# Train the three architectures on Fashion-MNIST with the training command line, one after another, then let
# `dogbreeds.compare` reuse the three finished runs and write the side-by-side table.
#
#   bash bench/fashion_mnist_runs.sh [OUT_DIR]
#
# Needs Debian's dataset-fashion-mnist package. Every run uses the same settings, so compare finds all three
# and trains nothing again. The input is 32 px because the photos are 28 px. Training uses the evaluation crop
# itself (--min-scale 1) with random horizontal flips: random crops of a 28 px photo cut off too much of the
# garment, and with crops down to 70 % of the area all three models still underfit after 8 epochs.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-bench/out/fashion-mnist/runs}"
python="${PYTHON:-.venv/bin/python}"
settings=(--test_dir data/fashion-mnist/test --image-size 32 --epochs 10 --min-scale 1 --out "$out")

if [ ! -d data/fashion-mnist/train ]; then
    "$python" bench/fashion_mnist.py --dest data/fashion-mnist
fi

for arch in custom_cnn resfcn18 resnet18; do
    "$python" -m dogbreeds.train --train_dir data/fashion-mnist/train --arch "$arch" --run-name "$arch" "${settings[@]}"
done

"$python" -m dogbreeds.compare data/fashion-mnist/train "${settings[@]}"
