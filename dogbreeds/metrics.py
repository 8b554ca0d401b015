"""Running sums for classification metrics and the fixed-format epoch log line."""

from __future__ import annotations

import re

import torch

EPOCH_METRIC_KEYS = (
    "train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "images_per_s", "seconds", "lr",
)

# Matches format_epoch_line() output; tests and log readers parse the line with it.
EPOCH_LINE_PATTERN = re.compile(
    r"^epoch +(?P<epoch>\d+)/(?P<epochs>\d+) \| "
    r"train loss (?P<train_loss>\d+\.\d{4}) acc +(?P<train_acc>\d+\.\d{2})% \| "
    r"val loss (?P<val_loss>\d+\.\d{4}|nan) top1 +(?P<val_top1>\d+\.\d{2})% top5 +(?P<val_top5>\d+\.\d{2})% \| "
    r"+(?P<images_per_s>\d+\.\d) img/s \| +(?P<seconds>\d+\.\d) s \| lr (?P<lr>\d\.\d{3}e[+-]\d{2})$"
)


class ClassificationTotals:
    """Sums of loss, top-1 and top-5 hits and sample count, kept as one tensor on the compute device.

    Keeping the sums on the device avoids a host synchronisation per batch. Distributed training all-reduces
    `values`, which contains loss_sum, top1, top5 and count in that order.
    """

    def __init__(self, device: torch.device) -> None:
        self.values = torch.zeros(4, dtype=torch.float64, device=device)

    def update(self, logits: torch.Tensor, targets: torch.Tensor, loss_sum: torch.Tensor) -> None:
        """Add one batch: logits [N, C], integer targets [N], and the summed (not mean) loss of the batch."""
        k = min(5, logits.shape[1])
        top = logits.detach().topk(k, dim=1).indices
        hits = top == targets.unsqueeze(1)

        self.values[0] += loss_sum.detach().double()
        self.values[1] += hits[:, 0].sum()
        self.values[2] += hits.any(dim=1).sum()
        self.values[3] += targets.shape[0]

    @property
    def count(self) -> int:
        return int(self.values[3].item())

    def summary(self) -> dict[str, float]:
        """Return mean loss and top-1 / top-5 accuracy as fractions in [0, 1] (NaN loss when empty)."""
        loss_sum, top1, top5, count = self.values.tolist()
        if count == 0:
            return {"loss": float("nan"), "top1": 0.0, "top5": 0.0, "count": 0}
        return {"loss": loss_sum / count, "top1": top1 / count, "top5": top5 / count, "count": int(count)}


def format_epoch_line(epoch: int, num_epochs: int, metrics: dict[str, float]) -> str:
    """Format one epoch's metrics as the fixed log line: same fields, same order, same decimals every time.

    Accuracies in `metrics` are fractions and are shown as percentages; `epoch` counts from 1.
    """
    width = len(str(num_epochs))
    return (
        f"epoch {epoch:>{width}d}/{num_epochs} | "
        f"train loss {metrics['train_loss']:.4f} acc {100 * metrics['train_acc']:6.2f}% | "
        f"val loss {metrics['val_loss']:.4f} top1 {100 * metrics['val_top1']:6.2f}% "
        f"top5 {100 * metrics['val_top5']:6.2f}% | "
        f"{metrics['images_per_s']:7.1f} img/s | {metrics['seconds']:6.1f} s | lr {metrics['lr']:.3e}"
    )
