r"""Choose a model on real road anomalies: evaluate candidates, then apply the selection rule.

    python -m training.select_model --candidates default=models/default.pt \
        objects=runs/objects/nflowjs/model.pt --out eval_output/selection

The rule (models/MODEL_CARD.md states it before any candidate's numbers):

1. **Floor**: a candidate is eligible only if its CamVid **val** mIoU is at least
   ``--miou-floor`` (default :data:`DEFAULT_MIOU_FLOOR`).
2. Among the eligible, the highest **road_anomaly_val AP** of the ``jsd`` score wins; AP
   within :data:`AP_TIE` points of the best counts as a tie, broken by the lower **FPR95**.

CamVid test mIoU, CamVid-Paste test AP / FPR95 and the msp score are evaluated and reported
beside the rule's numbers, never used by it. road_anomaly_val (``../shared/data/
road_anomaly_val``: 28 real photographs, anomaly label 2) is only ever evaluated here:
nothing trains or fits a threshold on it.

Each candidate's evaluations go to ``<out>/<name>/<set>/`` (``dense-ood-evaluate``'s files);
an evaluation whose ``metrics.json`` names the same model file content (SHA-256), backend
and frame limit is reused, so adding a candidate re-runs only that one. ``--limit N``
evaluates the first N frames of every set (a smoke run: CI uses 2).
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from dense_ood_ros.cli import add_backend, backend_options, command_parser
from dense_ood_ros.detector import Detector
from dense_ood_ros.evaluate import (build_report, evaluate_frames, find_frames, run_info,
                                    write_results)
from dense_ood_ros.evaluation import AnomalyLabelSpec, Evaluation
from dense_ood_ros.io import atomic_write, file_sha256
from dense_ood_ros.metrics import AnomalyMetrics, SemanticMetrics

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_ROAD_ANOMALY = DATA / "road_anomaly_val"
DEFAULT_CAMVID = DATA / "camvid"
DEFAULT_PASTE = REPO_ROOT / "data_generated" / "camvid_paste"
#: CamVid val mIoU a candidate needs to be eligible (the shipped models have 68-73).
DEFAULT_MIOU_FLOOR = 70.0
#: road_anomaly_val AP differences (points) below this are a tie, decided by FPR95.
AP_TIE = 0.5
SCORES = ("jsd", "msp")
ROAD_ANOMALY_VALUES = (2,)


@dataclass(frozen=True)
class EvaluationSet:
    """A folder of images with anomaly and/or semantic labels."""

    name: str
    images: Path
    anomaly_labels: Optional[Path]
    semantic_labels: Optional[Path]
    anomaly_values: Tuple[int, ...] = (1,)


def evaluation_sets(road_anomaly: Path, camvid: Path, paste: Path) -> List[EvaluationSet]:
    """road_anomaly_val, CamVid val and test; CamVid-Paste test when it has been generated."""
    sets = [EvaluationSet("road_anomaly_val", road_anomaly / "images", road_anomaly / "labels",
                          None, ROAD_ANOMALY_VALUES),
            EvaluationSet("camvid_val", camvid / "val", None, camvid / "valannot"),
            EvaluationSet("camvid_test", camvid / "test", None, camvid / "testannot")]
    if (paste / "test" / "manifest.json").is_file():
        sets.append(EvaluationSet("camvid_paste_test", paste / "test" / "images",
                                  paste / "test" / "labels", paste / "test" / "semantic"))
    return sets


def _evaluate(detector: Detector, model: Path, chosen: EvaluationSet, limit: Optional[int],
              out: Path, progress: bool) -> Dict:
    """Evaluate one set (or reuse an earlier identical evaluation); return its report."""
    previous = out / "metrics.json"
    if previous.is_file():
        report = json.loads(previous.read_text())
        if (report.get("model_sha256"), report.get("backend"), report.get("limit"),
                report.get("complete")) == (file_sha256(model), detector.backend.describe(),
                                            limit, True):
            return report
    frames, missing = find_frames(chosen.images, chosen.anomaly_labels, chosen.semantic_labels)
    if missing:
        raise FileNotFoundError(f"{chosen.name}: {missing[0]}"
                                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    frames = frames[:limit]
    if not frames:
        raise FileNotFoundError(f"{chosen.name}: no labelled images in {chosen.images}")
    spec = AnomalyLabelSpec(chosen.anomaly_values)
    evaluation = Evaluation(
        anomaly=AnomalyMetrics(SCORES) if chosen.anomaly_labels else None,
        semantic=(SemanticMetrics(detector.class_names, detector.label_set.ignore_index)
                  if chosen.semantic_labels else None))
    evaluate_frames(detector, frames, spec, evaluation, progress=progress)
    complete = evaluation.stopped is None and not evaluation.problems
    info = dict(run_info(detector, model, chosen.images, chosen.anomaly_labels,
                         chosen.semantic_labels, spec, detector.label_set.ignore_index,
                         "sklearn", complete, evaluation.stopped),
                set=chosen.name, model_sha256=file_sha256(model), limit=limit)
    report = build_report(evaluation, "sklearn", info)
    out.mkdir(parents=True, exist_ok=True)
    write_results(evaluation, out, "sklearn", info, report)
    if not complete:
        raise RuntimeError(f"{chosen.name}: evaluation incomplete "
                           f"({evaluation.stopped or evaluation.problems[0]}); see {out}")
    return report


def candidate_row(name: str, model: Path, reports: Dict[str, Dict]) -> Dict:
    """Collect the numbers of one candidate that the rule and the table use (percent)."""
    row = {"name": name, "model": str(model)}
    for set_name, report in reports.items():
        if report.get("semantic"):
            row[f"{set_name}_miou"] = report["semantic"]["miou"]
        if report.get("anomaly"):
            for score in SCORES:
                values = report["anomaly"]["scores"][score]
                for metric in ("ap", "fpr95", "auroc"):
                    row[f"{set_name}_{score}_{metric}"] = 100.0 * values[metric]
    return row


def select(rows: Sequence[Dict], miou_floor: float) -> Tuple[Optional[Dict], List[Dict]]:
    """Apply the rule; return the winner (None if no candidate is eligible) and rows ranked.

    Each ranked row gains ``eligible`` and ``rank`` (1 = chosen; ineligible ones last).
    """
    ranked = [dict(row, eligible=row["camvid_val_miou"] >= miou_floor) for row in rows]
    eligible = [row for row in ranked if row["eligible"]]
    best_ap = max((row["road_anomaly_val_jsd_ap"] for row in eligible), default=None)

    def key(row):  # the tie group by FPR95, then the other eligible, then the rest, by AP
        ap = row["road_anomaly_val_jsd_ap"]
        if row["eligible"] and best_ap - ap < AP_TIE:
            return (0, row["road_anomaly_val_jsd_fpr95"])
        return (1 if row["eligible"] else 2, -ap)

    ranked.sort(key=key)
    for rank, row in enumerate(ranked, 1):
        row["rank"] = rank
    return (ranked[0] if eligible else None), ranked


def _cell(row: Dict, key: str) -> str:
    value = row.get(key)
    return "–" if value is None else f"{value:.2f}"


def markdown_table(ranked: Sequence[Dict], miou_floor: float, limit: Optional[int]) -> str:
    """Format the selection as a markdown table, the rule first."""
    lines = [f"Rule: CamVid val mIoU >= {miou_floor:.1f} (floor), then the highest "
             f"road_anomaly_val AP of jsd; AP within {AP_TIE} points is a tie, decided by the "
             "lower FPR95. The other columns are reported, not used."
             + (f" Smoke run: the first {limit} frames of each set." if limit else ""), "",
             "| rank | candidate | eligible | road_anomaly_val jsd AP / FPR95 / AUROC | msp AP "
             "/ FPR95 | CamVid val mIoU | CamVid test mIoU | CamVid-Paste test jsd AP / FPR95 |",
             "|---:|---|---|---|---|---:|---:|---|"]
    for row in ranked:
        ra = "road_anomaly_val"
        lines.append(
            f"| {row['rank']} | {row['name']} | {'yes' if row['eligible'] else 'no'} | "
            f"{_cell(row, f'{ra}_jsd_ap')} / {_cell(row, f'{ra}_jsd_fpr95')} / "
            f"{_cell(row, f'{ra}_jsd_auroc')} | {_cell(row, f'{ra}_msp_ap')} / "
            f"{_cell(row, f'{ra}_msp_fpr95')} | {_cell(row, 'camvid_val_miou')} | "
            f"{_cell(row, 'camvid_test_miou')} | {_cell(row, 'camvid_paste_test_jsd_ap')} / "
            f"{_cell(row, 'camvid_paste_test_jsd_fpr95')} |")
    return "\n".join(lines) + "\n"


def _candidate(text: str) -> Tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path or "/" in name:
        raise ValueError(f"--candidates expects NAME=MODEL_FILE (NAME without '/'), got {text!r}")
    return name, Path(path)


def main(argv: Optional[List[str]] = None) -> int:
    parser = command_parser(
        "python -m training.select_model", __doc__.split("\n\n")[0],
        "<out>/<candidate>/<set>/ (dense-ood-evaluate's files per evaluation set), "
        "<out>/selection.json and selection.md (the rule, every candidate ranked, the choice).")
    parser.add_argument("--candidates", nargs="+", required=True, metavar="NAME=MODEL",
                        help="candidate model files, each with a short name")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--miou-floor", type=float, default=DEFAULT_MIOU_FLOOR,
                        help=f"CamVid val mIoU a candidate needs (default {DEFAULT_MIOU_FLOOR})")
    parser.add_argument("--limit", type=int, help="only the first N frames of each set")
    parser.add_argument("--road-anomaly", type=Path, default=DEFAULT_ROAD_ANOMALY,
                        help=f"road_anomaly_val folder (default {DEFAULT_ROAD_ANOMALY})")
    parser.add_argument("--camvid", type=Path, default=DEFAULT_CAMVID,
                        help=f"CamVid folder (default {DEFAULT_CAMVID})")
    parser.add_argument("--paste", type=Path, default=DEFAULT_PASTE,
                        help=f"CamVid-Paste folder, test reported when generated "
                             f"(default {DEFAULT_PASTE})")
    add_backend(parser, default="onnxruntime")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be at least 1, got {args.limit}")
    try:
        candidates = [_candidate(text) for text in args.candidates]
    except ValueError as exc:
        parser.error(str(exc))
    names = [name for name, _ in candidates]
    if len(set(names)) != len(names):
        parser.error(f"--candidates: each name once, got {names}")
    for name, model in candidates:
        if not model.is_file():
            parser.error(f"--candidates {name}: no model file {model}")
    for folder, option in ((args.road_anomaly, "--road-anomaly"), (args.camvid, "--camvid")):
        if not folder.is_dir():
            parser.error(f"{option}: no folder {folder}")
    sets = evaluation_sets(args.road_anomaly, args.camvid, args.paste)
    rows = []
    for name, model in candidates:
        try:
            detector = Detector.from_model(model, backend=args.backend, score_names=SCORES,
                                           **backend_options(args))
            reports = {chosen.name: _evaluate(detector, model, chosen, args.limit,
                                              args.out / name / chosen.name,
                                              not args.no_progress)
                       for chosen in sets}
        except (ValueError, RuntimeError, ImportError, OSError) as exc:
            print(f"select_model: error: candidate {name} ({model}): {exc}", file=sys.stderr)
            return 2
        rows.append(candidate_row(name, model, reports))
    winner, ranked = select(rows, args.miou_floor)
    table = markdown_table(ranked, args.miou_floor, args.limit)
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out / "selection.md") as tmp:
        tmp.write_text(table)
    with atomic_write(args.out / "selection.json") as tmp:
        tmp.write_text(json.dumps({"miou_floor": args.miou_floor, "ap_tie": AP_TIE,
                                   "limit": args.limit, "chosen": winner and winner["name"],
                                   "ranked": ranked}, indent=2) + "\n")
    print(table)
    print(f"chosen: {winner['name']} ({winner['model']})" if winner
          else f"chosen: none (no candidate reaches CamVid val mIoU {args.miou_floor})")
    print(f"wrote {args.out / 'selection.md'} and selection.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
