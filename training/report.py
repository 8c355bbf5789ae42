r"""Model card tables: several ``dense-ood-evaluate`` results side by side, a model's label set.

Example::

    python -m training.report CE-only=eval_output/camvid_ce/camvid_paste_test \
        NFlowJS=eval_output/default/camvid_paste_test
    python -m training.report --model models/default.pt    # its label set, from the checkpoint
"""

import json
from pathlib import Path
from typing import Dict, List, Tuple

from dense_ood_ros.checkpoint import CheckpointError, checkpoint_label_set, read_checkpoint
from dense_ood_ros.cli import command_parser
from dense_ood_ros.label_set import LabelSet


def load_results(runs: List[Tuple[str, Path]]) -> Dict[str, dict]:
    results = {}
    for name, folder in runs:
        path = folder / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"no metrics.json in {folder} (run dense-ood-evaluate first)")
        results[name] = json.loads(path.read_text())
    return results


def comparison_table(results: Dict[str, dict]) -> str:
    """One row per (model, score): AP, FPR95, AUROC in percent, plus mIoU when measured."""
    lines = ["| model | score | AP (%) | FPR95 (%) | AUROC (%) | mIoU (%) |",
             "|---|---|---:|---:|---:|---:|"]
    for name, report in results.items():
        miou = (report.get("semantic") or {}).get("miou")
        for score, values in report["anomaly"]["scores"].items():
            lines.append(f"| {name} | {score} | {100 * values['ap']:.2f} | "
                         f"{100 * values['fpr95']:.2f} | {100 * values['auroc']:.2f} | "
                         f"{'' if miou is None else f'{miou:.2f}'} |")
    modes = {report["anomaly"]["mode"] for report in results.values()}
    return "\n".join(lines) + f"\n\nMetric mode: {', '.join(sorted(modes))}.\n"


def label_set_table(label_set: LabelSet, model: str, stored: bool = True) -> str:
    """Return the model card's label set section: value, class, colour; the ignore index."""
    where = ("stored in the checkpoint" if stored
             else "not stored in the checkpoint, assumed from its class names")
    lines = [f"Label set `{label_set.name}` of `{model}` ({where}; the node "
             "publishes it on `~/output/label_set`): label value = class index, "
             f"{label_set.num_classes} classes; ground-truth value {label_set.ignore_index} is "
             "ignored in training and metrics.", "",
             "| value | class | colour (RGB) |", "|---:|---|---|"]
    lines += [f"| {value} | {name} | {', '.join(str(c) for c in color)} |"
              for value, (name, color) in enumerate(zip(label_set.class_names, label_set.colors))]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = command_parser("python -m training.report", __doc__.splitlines()[0],
                            "the Markdown comparison table and/or the label set table on "
                            "stdout.")
    parser.add_argument("runs", nargs="*", metavar="NAME=EVAL_DIR",
                        help="dense-ood-evaluate output folders")
    parser.add_argument("--model", type=Path, help="also print this checkpoint's label set")
    args = parser.parse_args(argv)
    if not args.runs and args.model is None:
        parser.error("nothing to report: give NAME=EVAL_DIR folders and/or --model")
    if args.model is not None:
        try:
            payload = read_checkpoint(args.model)
            label_set = checkpoint_label_set(payload, args.model)
        except CheckpointError as exc:
            parser.error(str(exc))
        print(label_set_table(label_set, str(args.model), "label_set" in payload))
        if not args.runs:
            return
    runs = []
    for item in args.runs:
        name, sep, folder = item.partition("=")
        if not sep:
            parser.error(f"expected NAME=EVAL_DIR, got {item!r}")
        runs.append((name, Path(folder)))
    print(comparison_table(load_results(runs)))


if __name__ == "__main__":
    main()
