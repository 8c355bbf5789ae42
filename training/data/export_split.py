r"""Write one split of a described dataset as the flat folders ``dense-ood-evaluate`` reads.

    python -m training.data.export_split --dataset cityscapes --root /data/cityscapes \\
        --split val --out data_generated/cityscapes_val
    dense-ood-evaluate --model MODEL --images data_generated/cityscapes_val/images \\
        --semantic-labels data_generated/cityscapes_val/semantic --out eval_output/cityscapes_val

Images are linked (hard link, else copied) as ``images/<name><suffix>``; labels are written as
``semantic/<name>.png`` in training ids (ignored pixels: the label set's ignore index, which
the evaluator takes from the model). Sample names are unique (Cityscapes:
``<city>_<seq>_<frame>``), so the stems pair.
"""

import os
import shutil
import sys
from pathlib import Path
from typing import List, Optional

import cv2
from tqdm import tqdm

from dense_ood_ros.cli import command_parser
from dense_ood_ros.io import read_label
from training.data.description import DatasetDescriptionError, DatasetError, load_description
from training.data.readers import list_samples


def export_split(dataset: str, root: Optional[Path], split: str, out: Path,
                 limit: Optional[int] = None, progress: bool = False) -> int:
    """Write ``out/images`` and ``out/semantic`` for a split; return the number of frames."""
    description = load_description(dataset)
    samples = list_samples(description, description.resolve_root(root, "--root"), split)[:limit]
    for folder in ("images", "semantic"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for sample in tqdm(samples, desc=f"{description.name} {split}", disable=not progress):
        image = out / "images" / f"{sample.name}{sample.image.suffix}"
        image.unlink(missing_ok=True)
        try:
            os.link(sample.image, image)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(sample.image, image)
        train_ids = description.train_ids(read_label(sample.label), sample.label)
        if not cv2.imwrite(str(out / "semantic" / f"{sample.name}.png"), train_ids):
            raise OSError(f"cannot write {out / 'semantic' / f'{sample.name}.png'}")
    return len(samples)


def main(argv: Optional[List[str]] = None) -> int:
    parser = command_parser("python -m training.data.export_split", __doc__.splitlines()[0],
                            "<out>/images/<name>.<ext> and <out>/semantic/<name>.png (training "
                            "ids).")
    parser.add_argument("--dataset", required=True,
                        help="dataset description: a built-in name or a YAML file")
    parser.add_argument("--root", type=Path,
                        help="the dataset's folder (default: the description's root)")
    parser.add_argument("--split", required=True, help="split to write")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--limit", type=int, help="only the first N frames")
    args = parser.parse_args(argv)
    try:
        count = export_split(args.dataset, args.root, args.split, args.out, args.limit, True)
    except (DatasetDescriptionError, DatasetError, ValueError, OSError) as exc:
        print(f"export_split: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {count} frames to {args.out}/images and {args.out}/semantic")
    return 0


if __name__ == "__main__":
    sys.exit(main())
