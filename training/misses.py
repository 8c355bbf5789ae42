"""Which CamVid-Paste anomaly pixels a model misses at a TPR operating point, and as what.

    python -m training.misses --model models/default.pt --benchmark data_generated/camvid_paste/val

At TPR 95 % (the FPR95 operating point) the threshold is the 5th percentile of the score over
all anomaly pixels; the pixels below it are "missed". The report breaks them down by the COCO
category of the pasted object they belong to (from the benchmark's ``manifest.json``) and by
the class the model predicts there, which tells a pasted-object failure (e.g. one animal read
as vegetation) from a boundary effect. The other side of FPR95, the inlier pixels at or above
that threshold ("false alarms"), is broken down by their CamVid ground-truth class.
Prints a Markdown report; ``--out`` also writes JSON.
"""

import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from dense_ood_ros.cli import (add_backend, add_input_size, add_model, add_score, backend_options,
                               command_parser)
from dense_ood_ros.detector import Detector
from dense_ood_ros.io import read_label, read_rgb


def object_index_map(label: np.ndarray, objects: Sequence[Dict]) -> np.ndarray:
    """Per pixel, the index of the pasted object it belongs to, else -1.

    A pixel belongs to an object when it is labelled 1 inside the object's box.
    """
    index = np.full(label.shape, -1, np.int32)
    for number, obj in enumerate(objects):  # later pastes cover earlier ones
        left, top, width, height = obj["box_xywh"]
        window = np.s_[top:top + height, left:left + width]
        index[window] = np.where(label[window] == 1, number, index[window])
    return index


def breakdown(scores: np.ndarray, groups: np.ndarray, names: Sequence[str], tpr: float) -> Dict:
    """Threshold at ``tpr`` over ``scores`` (anomaly pixels) and each group's share of the misses.

    ``groups`` holds an index into ``names`` per pixel. Per group: its share of all anomaly
    pixels, its share of the missed ones, and the fraction of its own pixels missed.
    """
    if scores.size == 0:
        raise ValueError("no anomaly pixels to analyse")
    threshold = float(np.quantile(scores, 1.0 - tpr))
    missed = scores < threshold
    return {"threshold": threshold, "anomaly_pixels": int(scores.size),
            "missed_pixels": int(missed.sum()),
            "groups": _group_rows(missed, groups, names, "anomaly", "missed", "miss_rate")}


def false_alarms(scores: np.ndarray, groups: np.ndarray, names: Sequence[str],
                 threshold: float) -> Dict:
    """Count inlier pixels scored at or above ``threshold``, by group.

    As ``breakdown`` does for the misses.
    """
    if scores.size == 0:
        raise ValueError("no inlier pixels to analyse")
    alarm = scores >= threshold
    return {"inlier_pixels": int(scores.size), "false_alarm_pixels": int(alarm.sum()),
            "fpr": float(alarm.mean()),
            "groups": _group_rows(alarm, groups, names, "inlier", "false_alarms",
                                  "false_alarm_rate")}


def _group_rows(flagged: np.ndarray, groups: np.ndarray, names: Sequence[str], population: str,
                flag: str, rate: str) -> List[Dict]:
    """Per named group present: pixels, share of the population, share of flagged, flag rate."""
    total_flagged = max(int(flagged.sum()), 1)
    rows = []
    for number, name in enumerate(names):
        member = groups == number
        if member.any():
            rows.append({"name": name, "pixels": int(member.sum()),
                         f"share_of_{population}": float(member.mean()),
                         f"share_of_{flag}": float((member & flagged).sum() / total_flagged),
                         rate: float(flagged[member].mean())})
    rows.sort(key=lambda row: -row[f"share_of_{flag}"])
    return rows


def analyse(detector: Detector, benchmark: Path, score: str, tpr: float,
            progress: bool = True) -> Dict:
    """Run ``detector`` over a CamVid-Paste folder.

    Breaks the misses down by pasted category and by predicted class.
    """
    manifest_path = benchmark / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no manifest.json in {benchmark} (generate it with "
                                "training.data.camvid_paste)")
    if score not in detector.backend.score_names:
        raise ValueError(f"score {score!r} is not computed by this model; it has "
                         f"{detector.backend.score_names}")
    manifest = json.loads(manifest_path.read_text())
    categories = sorted({obj["category"] for frame in manifest["frames"]
                         for obj in frame["objects"]})
    scores, category_ids, predicted, inlier_scores, inlier_classes = [], [], [], [], []
    for frame in tqdm(manifest["frames"], desc="misses", unit="frame", disable=not progress):
        label = read_label(benchmark / "labels" / f"{frame['stem']}.png")
        semantic = read_label(benchmark / "semantic" / f"{frame['stem']}.png")
        output = detector(read_rgb(benchmark / "images" / f"{frame['stem']}.png"))
        objects = object_index_map(label, frame["objects"])
        inside = objects >= 0
        object_categories = np.array([categories.index(obj["category"])
                                      for obj in frame["objects"]], np.int32)
        scores.append(output.scores[score][inside])
        category_ids.append(object_categories[objects[inside]] if inside.any()
                            else np.zeros(0, np.int32))
        predicted.append(output.labels[inside])
        inlier = label == 0
        inlier_scores.append(output.scores[score][inlier])
        inlier_classes.append(semantic[inlier])
    scores, category_ids, predicted, inlier_scores, inlier_classes = (
        np.concatenate(a) for a in (scores, category_ids, predicted, inlier_scores,
                                    inlier_classes))
    by_category = breakdown(scores, category_ids, categories, tpr)
    by_class = breakdown(scores, predicted, detector.class_names, tpr)
    alarms = false_alarms(inlier_scores, inlier_classes, detector.class_names,
                          by_category["threshold"])
    return {"benchmark": str(benchmark), "score": score, "tpr": tpr,
            "threshold": by_category["threshold"], "anomaly_pixels": by_category["anomaly_pixels"],
            "missed_pixels": by_category["missed_pixels"],
            "by_category": by_category["groups"], "by_predicted_class": by_class["groups"],
            "inlier_pixels": alarms["inlier_pixels"],
            "false_alarm_pixels": alarms["false_alarm_pixels"], "fpr": alarms["fpr"],
            "false_alarms_by_true_class": alarms["groups"]}


def markdown(report: Dict) -> str:
    lines = [f"Missed anomaly pixels at TPR {100 * report['tpr']:.0f} % ({report['score']} < "
             f"{report['threshold']:.4f}): {report['missed_pixels']} of "
             f"{report['anomaly_pixels']}.", ""]
    for key, title in (("by_category", "pasted category"),
                       ("by_predicted_class", "predicted class")):
        lines += [f"| {title} | pixels | share of anomaly px (%) | "
                  "share of missed px (%) | missed (%) |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {row['name']} | {row['pixels']} | {100 * row['share_of_anomaly']:.1f} | "
                  f"{100 * row['share_of_missed']:.1f} | {100 * row['miss_rate']:.1f} |"
                  for row in report[key]]
        lines.append("")
    lines += [f"False alarms at the same threshold: {report['false_alarm_pixels']} of "
              f"{report['inlier_pixels']} inlier pixels (FPR {100 * report['fpr']:.2f} %).", "",
              "| true class | pixels | share of inlier px (%) | "
              "share of false alarms (%) | false alarm rate (%) |",
              "|---|---:|---:|---:|---:|"]
    lines += [f"| {row['name']} | {row['pixels']} | {100 * row['share_of_inlier']:.1f} | "
              f"{100 * row['share_of_false_alarms']:.1f} | {100 * row['false_alarm_rate']:.1f} |"
              for row in report["false_alarms_by_true_class"]]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = command_parser("python -m training.misses", __doc__.splitlines()[0],
                            "the Markdown report on stdout; with --out, the same report as JSON.")
    add_model(parser)
    parser.add_argument("--benchmark", required=True, type=Path,
                        help="CamVid-Paste split folder (images/, labels/, manifest.json)")
    add_score(parser)
    parser.add_argument("--tpr", type=float, default=0.95,
                        help="operating point (default 0.95, as FPR95)")
    add_backend(parser, default="torch")
    add_input_size(parser)
    parser.add_argument("--out", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    if not 0.0 < args.tpr < 1.0:
        parser.error(f"--tpr must be in (0, 1), got {args.tpr}")
    try:
        detector = Detector.from_model(args.model, backend=args.backend, score_names=(args.score,),
                                       input_size=args.input_size, **backend_options(args))
        report = analyse(detector, args.benchmark, args.score, args.tpr)
    except (FileNotFoundError, ValueError) as exc:
        print(f"training.misses: error: {exc}", file=sys.stderr)
        return 2
    print(markdown(report))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
