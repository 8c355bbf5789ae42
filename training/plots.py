"""Training plots: loss curves from a stage's CSV log, and a grid of flow samples.

Re-plot the samples of a saved flow (also prints how many sample pixels are clipped):

    python -m training.plots --config training/configs/camvid_nflowjs.yaml \
        --flow runs/camvid/nflowjs/flow.pt --out samples.png
"""

import argparse
import csv
from pathlib import Path
from typing import List, Optional, Sequence

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
                      patch_size=(64, 64), count: int = 16, scales: Sequence[int] = (1,)) -> List[float]:
    """A grid of flow samples at two temperatures (``temperature`` and 0.7 of it), plus one row
    per sampling scale s > 1 (sampled at 1/s of ``patch_size``, upsampled, as nflowjs pastes them).

    Returns, per row, the share of sample pixels clipped to black or white: a flow that has
    drifted to easy, saturated negatives shows it here before it shows in the metrics.
    """
    import torch

    from training.flows.glow import clipped_share
    from training.pasting import flow_size_at_scale, sample_negatives

    generator = torch.Generator().manual_seed(seed)
    specs = [(temperature, 1), (0.7 * temperature, 1)] + [(temperature, s) for s in scales if s > 1]
    rows = []
    with torch.no_grad():
        for t, scale in specs:
            size = flow_size_at_scale(patch_size, scale, getattr(flow, "size_multiple", 1))
            rows.append(sample_negatives(flow, count, size, patch_size, t, generator))
    clipped = [clipped_share(samples) for samples in rows]
    fig, axes = plt.subplots(len(rows), count, figsize=(count * 0.9, 1.15 * len(rows)), squeeze=False)
    for r, (samples, (t, scale)) in enumerate(zip(rows, specs)):
        for c in range(count):
            axes[r, c].imshow(samples[c].permute(1, 2, 0).numpy())
            axes[r, c].axis("off")
        where = f", sampled at 1/{scale} size" if scale > 1 else ""
        axes[r, 0].set_title(f"T={t:.2f}{where}: {100 * clipped[r]:.0f} % of pixels clipped to black/white",
                             fontsize=7, loc="left")
    fig.suptitle("normalizing-flow samples (synthetic negatives)", fontsize=9)
    fig.savefig(png_path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return clipped


def main(argv: Optional[List[str]] = None) -> None:
    from training.common import load_state
    from training.config import load_config, parse_overrides
    from training.stages import flow_from_config, load_flow_weights

    parser = argparse.ArgumentParser(prog="python -m training.plots", description="Re-plot a saved flow's samples.")
    parser.add_argument("--config", type=Path, required=True, help="training config (the flow's architecture)")
    parser.add_argument("--flow", type=Path, required=True, help="flow.pt of a flow or nflowjs stage")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides the flow was trained with, e.g. flow.hidden=128")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    state = load_state(args.flow)
    if state is None:
        parser.error(f"--flow {args.flow} not found")
    if "flow" not in state:
        parser.error(f"{args.flow} is not a saved flow (expected a flow.pt with a 'flow' state)")
    try:
        config = load_config(args.config, parse_overrides(args.set))
        flow = flow_from_config(config)
        load_flow_weights(flow, state["flow"], args.flow)
    except ValueError as err:
        parser.error(str(err))
    flow.eval()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    clipped = plot_flow_samples(flow, args.out, seed=args.seed, temperature=args.temperature,
                                scales=config.nflowjs.sample_scales)
    coarse = "".join(f", {100 * c:.1f} % at 1/{s} size" for c, s in
                     zip(clipped[2:], [s for s in config.nflowjs.sample_scales if s > 1]))
    print(f"wrote {args.out}; clipped pixels: {100 * clipped[0]:.1f} % at T={args.temperature:.2f}, "
          f"{100 * clipped[1]:.1f} % at T={0.7 * args.temperature:.2f}{coarse}")


if __name__ == "__main__":
    main()
