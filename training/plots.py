"""Training plots: loss curves from a stage's CSV log, and a grid of flow samples.

Re-plot the samples of a saved flow (also prints how many sample pixels are clipped):

    python -m training.plots --config training/configs/camvid_nflowjs.yaml \
        --flow runs/camvid/nflowjs/flow.pt --out samples.png
"""

import csv
import math
from pathlib import Path
from typing import List, Optional, Sequence

import matplotlib
import torch

from dense_ood_ros.cli import add_out, command_parser
from training.common import load_state
from training.config import add_config_arguments, config_from_args
from training.flows import flow_from_config, load_flow_weights
from training.flows.glow import clipped_share
from training.pasting import flow_size_at_scale, sample_negatives

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_losses(csv_path: Path, png_path: Path, title: str) -> None:
    """Plot every numeric ``*loss*`` column against the step (smoothed), and val mIoU if logged."""
    with open(csv_path) as stream:
        rows = list(csv.DictReader(stream))
    loss_columns = [c for c in (rows[0].keys() if rows else []) if "loss" in c
                    or c.startswith("bpd")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for column in loss_columns:
        points = [(int(r["step"]), float(r[column])) for r in rows if r.get(column)
                  and r.get("step") and math.isfinite(float(r[column]))]
        if not points:  # e.g. bpd of a run without a flow: logged as nan
            continue
        steps, values = zip(*points)
        window = max(1, len(values) // 50)
        smooth = [sum(values[max(0, i - window + 1):i + 1])
                  / len(values[max(0, i - window + 1):i + 1])
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
                      patch_size=(64, 64), count: int = 16,
                      scales: Sequence[int] = (1,)) -> List[float]:
    """Plot a grid of flow samples at two temperatures (``temperature`` and 0.7 of it).

    Plus one row per sampling scale s > 1 (sampled at 1/s of ``patch_size``, upsampled, as
    nflowjs pastes them).

    Returns, per row, the share of sample pixels clipped to black or white: a flow that has
    drifted to easy, saturated negatives shows it here before it shows in the metrics.
    """
    generator = torch.Generator().manual_seed(seed)
    specs = [(temperature, 1),
             (0.7 * temperature, 1)] + [(temperature, s) for s in scales if s > 1]
    rows = []
    with torch.no_grad():
        for t, scale in specs:
            size = flow_size_at_scale(patch_size, scale, getattr(flow, "size_multiple", 1))
            rows.append(sample_negatives(flow, count, size, patch_size, t, generator))
    clipped = [clipped_share(samples) for samples in rows]
    fig, axes = plt.subplots(len(rows), count, figsize=(count * 0.9, 1.15 * len(rows)),
                             squeeze=False)
    for r, (samples, (t, scale)) in enumerate(zip(rows, specs)):
        for c in range(count):
            axes[r, c].imshow(samples[c].permute(1, 2, 0).numpy())
            axes[r, c].axis("off")
        where = f", sampled at 1/{scale} size" if scale > 1 else ""
        axes[r, 0].set_title(f"T={t:.2f}{where}: "
                             f"{100 * clipped[r]:.0f} % of pixels clipped to black/white",
                             fontsize=7, loc="left")
    fig.suptitle("normalizing-flow samples (synthetic negatives)", fontsize=9)
    fig.savefig(png_path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return clipped


def main(argv: Optional[List[str]] = None) -> None:
    parser = command_parser("python -m training.plots", "Re-plot a saved flow's samples.",
                            "the PNG given by --out (a grid of flow samples per temperature and "
                            "sampling scale); the share of clipped sample pixels on stdout.")
    add_config_arguments(parser,
                         "config overrides the flow was trained with, e.g. flow.hidden=128")
    parser.add_argument("--flow", type=Path, required=True,
                        help="flow.pt of a flow or nflowjs stage")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="sampling temperature (default 1)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed of the samples (default 0)")
    add_out(parser, "PNG to write")
    args = parser.parse_args(argv)
    state = load_state(args.flow)
    if state is None:
        parser.error(f"--flow {args.flow} not found")
    if "flow" not in state:
        parser.error(f"{args.flow} is not a saved flow (expected a flow.pt with a 'flow' state)")
    config = config_from_args(parser, args)
    try:
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
    print(f"wrote {args.out}; clipped pixels: {100 * clipped[0]:.1f} % at "
          f"T={args.temperature:.2f}, {100 * clipped[1]:.1f} % at "
          f"T={0.7 * args.temperature:.2f}{coarse}")


if __name__ == "__main__":
    main()
