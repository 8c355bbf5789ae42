r"""The demo frame with the dogs: each model's score on them against the facades, and a figure.

    python -m training.demo_frame --models before=models/camvid_ce.pt after=models/default.pt \
        --out docs/figures/demo_frame_scores.png

CamVid test frame Seq05VD_f02130 (``demo/``) shows two dogs on the pavement, the one kind of
object there outside CamVid's 11 classes; CamVid labels them void. The dog pixels are the void
pixels inside :data:`DOG_BOXES` (drawn by hand around the two dogs); the facades are the
pixels labelled building. A model's score is asked to be higher on the dogs, on average, than
on the facades.
"""

import sys
from pathlib import Path
from typing import Dict, List, Optional

import matplotlib
import numpy as np

from dense_ood_ros.cli import add_out, command_parser
from dense_ood_ros.detector import Detector
from dense_ood_ros.io import read_label, read_rgb

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
FRAME = "Seq05VD_f02130"
DEFAULT_IMAGE = REPO_ROOT.parent / "shared" / "data" / "camvid" / "test" / f"{FRAME}.webp"
DEFAULT_LABEL = REPO_ROOT.parent / "shared" / "data" / "camvid" / "testannot" / f"{FRAME}.png"
#: (left, right, top, bottom) pixel boxes around the two dogs in the 480x360 frame.
DOG_BOXES = ((62, 90, 200, 232), (190, 222, 205, 234))
VOID, BUILDING, TREE = 11, 1, 5


def regions(label: np.ndarray) -> Dict[str, np.ndarray]:
    """Boolean masks of the dogs (void pixels inside the boxes), the facades and the trees."""
    boxes = np.zeros(label.shape, bool)
    for left, right, top, bottom in DOG_BOXES:
        boxes[top:bottom, left:right] = True
    return {"dogs": boxes & (label == VOID), "facades": label == BUILDING, "trees": label == TREE}


def region_means(score: np.ndarray, masks: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Mean score per region."""
    return {name: float(score[mask].mean()) for name, mask in masks.items()}


def main(argv: Optional[List[str]] = None) -> int:
    parser = command_parser("python -m training.demo_frame", __doc__.split("\n\n")[0],
                            "the PNG given by --out: the frame with the dog region, then each "
                            "model's jsd score (one colour scale, 0-1) with its region means.")
    parser.add_argument("--models", nargs="+", required=True, metavar="NAME=MODEL",
                        help="models to compare")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="the frame")
    parser.add_argument("--label", type=Path, default=DEFAULT_LABEL, help="its CamVid label")
    add_out(parser, "PNG to write")
    args = parser.parse_args(argv)
    frame = read_rgb(args.image)
    masks = regions(read_label(args.label, frame.shape[:2]))
    panels = [("input (dogs outlined)", frame, None)]
    for entry in args.models:
        name, _, path = entry.partition("=")
        score = Detector.from_model(path, backend="onnxruntime")(frame).score
        means = region_means(score, masks)
        print(f"{name} ({path}): dogs {means['dogs']:.3f}, facades {means['facades']:.3f}, "
              f"trees {means['trees']:.3f} "
              f"({'dogs higher' if means['dogs'] > means['facades'] else 'facades higher'})")
        panels.append((f"{name}: dogs {means['dogs']:.2f}, facades {means['facades']:.2f}",
                       score, (0.0, 1.0)))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False)
    for ax, (title, image, limits) in zip(axes[0], panels):
        ax.imshow(image, cmap=None if limits is None else "inferno",
                  **({} if limits is None else {"vmin": limits[0], "vmax": limits[1]}))
        ax.contour(masks["dogs"], levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
