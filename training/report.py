r"""Side-by-side Markdown table of several ``dense-ood-evaluate`` results (for the model card).

Example::

    python -m training.report CE-only=eval_output/camvid_ce/camvid_paste_test \
        NFlowJS=eval_output/default/camvid_paste_test
"""

import json
from pathlib import Path
from typing import Dict, List, Tuple

from dense_ood_ros.cli import command_parser


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


def main(argv=None) -> None:
    parser = command_parser("python -m training.report", __doc__.splitlines()[0],
                            "the Markdown comparison table on stdout.")
    parser.add_argument("runs", nargs="+", metavar="NAME=EVAL_DIR",
                        help="dense-ood-evaluate output folders")
    args = parser.parse_args(argv)
    runs = []
    for item in args.runs:
        name, sep, folder = item.partition("=")
        if not sep:
            parser.error(f"expected NAME=EVAL_DIR, got {item!r}")
        runs.append((name, Path(folder)))
    print(comparison_table(load_results(runs)))


if __name__ == "__main__":
    main()
