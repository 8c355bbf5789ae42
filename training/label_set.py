"""Store a dataset's label set in checkpoints written before label sets were, in place.

    python -m training.label_set --dataset camvid models/default.pt models/camvid_ce.pt
    python -m training.label_set --show models/default.pt

The file is rewritten atomically with everything else as it was: the weights stay
bit-identical (checked after writing). The label set's class names must be the
checkpoint's; a checkpoint that has a label set already is left as it is (the same one) or
refused (another one).
"""

import sys
from pathlib import Path
from typing import List, Optional

from dense_ood_ros.checkpoint import (CheckpointError, add_label_set, checkpoint_label_set,
                                      read_checkpoint)
from dense_ood_ros.cli import command_parser
from training.data.description import DatasetDescriptionError, load_description


def describe(path: Path) -> str:
    """One line: the label set a checkpoint has (or is assumed to have)."""
    payload = read_checkpoint(path)
    label_set = checkpoint_label_set(payload, path)
    stored = "stored" if "label_set" in payload else "assumed, not stored"
    return (f"{path}: label set {label_set.name!r} ({stored}), ignore index "
            f"{label_set.ignore_index}, {label_set.num_classes} classes: "
            + ", ".join(f"{name} {list(color)}"
                        for name, color in zip(label_set.class_names, label_set.colors)))


def main(argv: Optional[List[str]] = None) -> int:
    parser = command_parser("python -m training.label_set", __doc__.splitlines()[0],
                            "the checkpoints, rewritten in place (weights unchanged); a line "
                            "per file on stdout.")
    parser.add_argument("checkpoints", nargs="+", type=Path, help="model checkpoints (.pt)")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--dataset",
                        help="dataset description whose label set is stored: a built-in name "
                             "(camvid, cityscapes) or a YAML file")
    action.add_argument("--show", action="store_true",
                        help="print each checkpoint's label set, change nothing")
    args = parser.parse_args(argv)
    failed = False
    try:
        label_set = None if args.show else load_description(args.dataset).label_set
    except DatasetDescriptionError as exc:
        parser.error(str(exc))
    for path in args.checkpoints:
        try:
            print(describe(path) if args.show else add_label_set(path, label_set))
        except (CheckpointError, OSError) as exc:
            print(f"label_set: error: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
