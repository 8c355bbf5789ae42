"""Side-by-side anomaly maps of two models on a benchmark folder (for the model card).

``python -m training.figures --models ce=models/camvid_ce.pt nflowjs=models/default.pt \
    --scores msp,jsd --images data_generated/camvid_paste/test/images \
    --labels data_generated/camvid_paste/test/labels --out docs/figures/anomaly_maps.png``
"""

from pathlib import Path

import matplotlib
import numpy as np

from dense_ood_ros.cli import add_out, command_parser, parse_scores
from dense_ood_ros.detector import Detector
from dense_ood_ros.io import ImageFolderError, list_images, read_label, read_rgb

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv=None) -> None:
    parser = command_parser("python -m training.figures", __doc__.splitlines()[0],
                            "the PNG given by --out: per frame, "
                            "input | ground truth | each model's score.")
    parser.add_argument("--models", nargs="+", required=True, metavar="NAME=MODEL",
                        help="models to compare")
    parser.add_argument("--scores", type=parse_scores, required=True,
                        help="comma-separated anomaly scores, one per model, same order")
    parser.add_argument("--images", type=Path, required=True, help="folder of benchmark images")
    parser.add_argument("--labels", type=Path, required=True,
                        help="folder of anomaly label PNGs (same names)")
    parser.add_argument("--count", type=int, default=4,
                        help="frames, evenly spaced over the sorted images")
    parser.add_argument("--stems", nargs="+",
                        help="these frames (file stems) instead of --count evenly spaced")
    add_out(parser, "PNG to write")
    args = parser.parse_args(argv)
    if len(args.scores) != len(args.models):
        parser.error("give one --scores entry per --models entry")
    models = [m.split("=", 1) for m in args.models]
    detectors = [Detector.from_model(path, score_names=(score,))
                 for (_, path), score in zip(models, args.scores)]
    try:
        images = list_images(args.images, "benchmark image")
    except ImageFolderError as exc:
        parser.error(str(exc))
    if args.stems:
        by_stem = {path.stem: path for path in images}
        unknown = [stem for stem in args.stems if stem not in by_stem]
        if unknown:
            parser.error(f"--stems not found in {args.images}: {', '.join(unknown)}")
        chosen = [by_stem[stem] for stem in args.stems]
    else:
        chosen = [images[i] for i in np.linspace(0, len(images) - 1, args.count).astype(int)]
    columns = 2 + len(detectors)
    fig, axes = plt.subplots(len(chosen), columns, figsize=(3.2 * columns, 2.5 * len(chosen)),
                             squeeze=False)
    for row, path in enumerate(chosen):
        frame = read_rgb(path)
        label = read_label(args.labels / path.name)
        panels = [(frame, "input"),
                  (np.where(label == 255, 0.5, label == 1).astype(float), "ground truth")]
        for (name, _), score, detector in zip(models, args.scores, detectors):
            panels.append((detector(frame).score, f"{name}: {score}"))
        for col, (panel, title) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(panel, cmap=None if panel.ndim == 3 else "inferno")
            ax.set_title(title if row == 0 else "", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
