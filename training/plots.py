"""Loss curves from a stage's CSV log."""

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_losses(csv_path: Path, png_path: Path, title: str) -> None:
    """Plot every numeric ``*loss*`` column against the step (smoothed), and val mIoU if logged."""
    with open(csv_path) as stream:
        rows = list(csv.DictReader(stream))
    loss_columns = [c for c in (rows[0].keys() if rows else []) if "loss" in c or c.startswith("bpd")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for column in loss_columns:
        points = [(int(r["step"]), float(r[column])) for r in rows if r.get(column) and r.get("step")]
        if not points:
            continue
        steps, values = zip(*points)
        window = max(1, len(values) // 50)
        smooth = [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
                  for i in range(len(values))]
        axes[0].plot(steps, smooth, label=column)
    axes[0].set_xlabel("step")
    axes[0].set_title(f"{title}: losses (moving average)")
    axes[0].legend()
    val = [(int(r["epoch"]), float(r["val_miou"])) for r in rows if r.get("val_miou")]
    if val:
        axes[1].plot(*zip(*val), marker="o")
    axes[1].set_xlabel("epoch")
    axes[1].set_title("val mIoU (%)")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def plot_flow_samples(flow, png_path: Path, seed: int, temperature: float = 1.0,
                      patch_size=(64, 64), count: int = 16) -> None:
    """A grid of flow samples at two temperatures (``temperature`` and 0.7 of it)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        rows = [flow.sample(count, *patch_size, temperature=t, generator=generator)
                for t in (temperature, 0.7 * temperature)]
    fig, axes = plt.subplots(2, count, figsize=(count * 0.9, 2.3))
    for r, (samples, t) in enumerate(zip(rows, (temperature, 0.7 * temperature))):
        for c in range(count):
            axes[r, c].imshow(samples[c].permute(1, 2, 0).numpy())
            axes[r, c].axis("off")
        axes[r, 0].set_title(f"T={t:.2f}", fontsize=7, loc="left")
    fig.suptitle("normalizing-flow samples (synthetic negatives)", fontsize=9)
    fig.savefig(png_path, dpi=100, bbox_inches="tight")
    plt.close(fig)
