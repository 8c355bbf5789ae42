r"""Write a copy of a model file that declares a score smoothing (see dense_ood_ros/graph.py).

    python -m training.set_score_smoothing --model runs/x/nflowjs/model.pt --sigma 3 \\
        --out runs/x/nflowjs/model_smooth3.pt

The weights and every other field are copied as they are; ``--sigma 0`` removes the smoothing.
"""

import sys
from pathlib import Path
from typing import List, Optional

from dense_ood_ros.checkpoint import MAX_SCORE_SMOOTHING, CheckpointError, set_score_smoothing
from dense_ood_ros.cli import add_model, add_out, command_parser
from dense_ood_ros.io import file_sha256


def main(argv: Optional[List[str]] = None) -> int:
    parser = command_parser("python -m training.set_score_smoothing", __doc__.split("\n\n")[0],
                            "<out>: the model file with 'score_smoothing' set.")
    add_model(parser, "checkpoint .pt to copy")
    parser.add_argument("--sigma", type=float, required=True,
                        help="Gaussian standard deviation in score-map cells (4 input pixels "
                             f"each), 0 to {MAX_SCORE_SMOOTHING}; 0: none")
    add_out(parser, "the new checkpoint (may be --model itself)")
    args = parser.parse_args(argv)
    try:
        set_score_smoothing(args.model, args.out, args.sigma)
    except (CheckpointError, OSError) as exc:
        print(f"set_score_smoothing: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} (score_smoothing {args.sigma:g}, SHA-256 "
          f"{file_sha256(Path(args.out))[:8]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
