r"""One table of ``scripts/gpu_check.sh``'s results: agreement, start-up and speed per backend.

Reads ``OUT/parity.json`` (``scripts/gpu_parity.py``) and ``OUT/benchmark-SIZE.json``
(``dense-ood-benchmark``, one per size), whichever exist, and prints a Markdown table, one row
per backend: label agreement with torch CPU fp32 on real frames, largest score difference,
seconds to start (TensorRT: graph conversion and engine build), and inference FPS with p50 /
p95 latency at each size. Also written to ``OUT/summary.md``::

    python scripts/gpu_summary.py OUT
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

SIZES = ("360x480", "720x1280")


def _load(path: Path) -> Optional[Dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else None


def summary(out: Path) -> str:
    """Render the table of the results under ``out``."""
    parity = _load(out / "parity.json")
    benchmarks = {size: _load(out / f"benchmark-{size}.json") for size in SIZES}
    rows: Dict[str, Dict[str, Any]] = {}
    for row in (parity or {}).get("results", []):
        rows[row["backend"]] = {"parity": row}
    for size, report in benchmarks.items():
        for row in (report or {}).get("results", []):
            rows.setdefault(row["backend"], {})[size] = row
    header = ["backend", "labels = torch fp32", "max score diff", "start s",
              *(f"{size} FPS (p50 / p95 ms)" for size in SIZES), "note"]
    lines = ["## GPU check", "", "| " + " | ".join(header) + " |",
             "|---|" + "---:|" * (len(header) - 2) + "---|"]
    for spec, row in rows.items():
        lines.append("| " + " | ".join([spec, *_parity_cells(row.get("parity")),
                                        *(_speed(row.get(size)) for size in SIZES),
                                        _note(row)]) + " |")
    if not rows:
        lines.append("| (no results) |" + " |" * (len(header) - 1))
    return "\n".join(lines) + "\n"


def _parity_cells(row: Optional[Dict[str, Any]]) -> List[str]:
    if not row or "label_agreement" not in row:
        return ["", "", f"{row['setup_s']:.1f}" if row and "setup_s" in row else ""]
    verdict = "" if row["within_bound"] else " (OUTSIDE bound)"
    return [f"{row['label_agreement']:.2%}{verdict}", f"{row['max_score_diff']:.1e}",
            f"{row['setup_s']:.1f}"]


def _speed(row: Optional[Dict[str, Any]]) -> str:
    if not row or "inference" not in row:
        return ""
    timing = row["inference"]
    return f"{timing['fps']:.1f} ({timing['p50_ms']:.2f} / {timing['p95_ms']:.2f})"


def _note(row: Dict[str, Any]) -> str:
    parity = row.get("parity") or {}
    for key in ("skipped", "error"):
        if key in parity:
            return f"{key}: {parity[key]}"
    for size in SIZES:
        if row.get(size, {}).get("error"):
            return f"benchmark {size}: {row[size]['error']}"
    return parity.get("describe", "")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="gpu_check.sh's OUT_DIR")
    args = parser.parse_args(argv)
    if not args.out.is_dir():
        parser.error(f"no folder {args.out}")
    table = summary(args.out)
    print(table)
    (args.out / "summary.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
