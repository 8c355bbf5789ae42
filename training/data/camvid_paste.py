r"""CamVid-Paste: a Fishyscapes-Static-style anomaly benchmark, on any described dataset.

Real COCO objects are pasted on the road of a dataset's frames; by default CamVid's::

    python -m training.data.camvid_paste --split test --out data_generated/camvid_paste/test \
        --seed 0
    python -m training.data.camvid_paste --dataset my_cams.yaml --root /data/my_cams \
        --road-class "drivable area" --split val --out data_generated/my_cams_paste/val

Any dataset description (``training/data/description.py``) whose label set has a road class
works: ``--road-class`` names it (default ``road``). ``--foreground-classes`` (objects must not
largely cover them) and ``--reference-classes`` (whose labelled boxes give the horizon) default
to those of :data:`DEFAULT_FOREGROUND` and :data:`REFERENCE_OBJECTS` the label set has; with no
reference class the horizon is :data:`DEFAULT_HORIZON_FRACTION` of the frame height. The rest
of this text says CamVid for the dataset.

Objects are cut out with their exact COCO panoptic masks. Only "thing" categories that are
not, and do not look like, CamVid classes are used: animals and household objects listed in
:data:`OBJECT_HEIGHTS_M`; never persons, vehicles or street furniture (COCO supercategories
:data:`EXCLUDED_SUPERCATEGORIES`). Crowd, small, truncated (touching the image border),
split, holed and occluded segments are skipped (:func:`is_usable_segment`). The object pools
are disjoint: CamVid **test** frames get COCO **val2017** objects, CamVid **val** frames get
COCO **train2017** objects (:data:`COCO_SPLIT_FOR`).

Placement follows a flat road seen by a level camera: an object's bottom stands on a road
pixel (CamVid class road) below the horizon row, and its height in pixels is its typical real
height times ``(row - horizon) / camera height``. The camera height is
:data:`CAMERA_HEIGHT_M`; the horizon row is estimated per CamVid sequence from the labelled
cars and pedestrians (:func:`estimate_horizons`; about row 169 of 360 for most sequences,
205 for 0001TP, whose camera looks further down). Edges are
feathered (area-resampled, slightly blurred mask, colours un-mixed from the COCO background)
and the object's brightness is pulled half-way toward the frame's.

Output per frame (same stem as the CamVid frame): ``images/<stem>.png``; ``labels/<stem>.png``
with 1 = pasted object (alpha > 0.5), 0 = inlier, 255 = CamVid void; ``semantic/<stem>.png``,
the CamVid labels (training ids) with pasted pixels set to the label set's ignore index (11)
for mIoU; plus ``manifest.json`` (seed, dataset,
objects per frame with their COCO source and licence, attribution). Everything is a pure
function of the seed: the same seed gives byte-identical files. The output is derived from
CamVid (CC BY-NC 4.0) and COCO images (Flickr licences): keep it out of the repository
(``data_generated/`` is git-ignored).
"""

import json
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from dense_ood_ros.cli import command_parser
from dense_ood_ros.io import read_label, read_rgb, write_rgb
from dense_ood_ros.label_set import LabelSet
from training.data.description import DatasetDescription, load_description
from training.data.readers import Sample, list_samples

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATASET = "camvid"
DEFAULT_COCO = REPO_ROOT.parent / "shared" / "data" / "coco128_panoptic"
DEFAULT_OUT = REPO_ROOT / "data_generated" / "camvid_paste"

#: CamVid split -> COCO split whose objects are pasted on it (disjoint object pools).
COCO_SPLIT_FOR = {"val": "train2017", "test": "val2017"}
#: COCO supercategories never pasted: person, vehicle (bicycle, car, motorcycle, airplane, bus,
#: train, truck, boat) and outdoor (traffic light, fire hydrant, stop sign, parking meter, bench).
EXCLUDED_SUPERCATEGORIES = ("person", "vehicle", "outdoor")
#: Usable COCO categories (animals and household objects large enough to be road obstacles)
#: with a typical real height in metres, which sets their pasted size.
OBJECT_HEIGHTS_M = {
    "bird": 0.3, "cat": 0.3, "dog": 0.6, "horse": 1.6, "sheep": 0.9, "cow": 1.4, "elephant": 2.8,
    "bear": 1.2, "zebra": 1.4, "giraffe": 4.5,
    "chair": 0.9, "couch": 0.9, "potted plant": 0.6, "bed": 0.7, "toilet": 0.75,
    "tv": 0.6, "laptop": 0.3, "microwave": 0.35, "oven": 0.9, "refrigerator": 1.8, "toaster": 0.25,
    "teddy bear": 0.5, "vase": 0.4, "clock": 0.35, "suitcase": 0.6, "backpack": 0.5,
    "umbrella": 0.9, "handbag": 0.35, "bottle": 0.3,
}
DEFAULT_ROAD_CLASS = "road"
#: Class names an object must not largely cover (they may be nearer than the object), when the
#: label set has them (CamVid: car, pedestrian, bicyclist; Cityscapes: person ... bicycle).
DEFAULT_FOREGROUND = ("car", "pedestrian", "bicyclist", "person", "rider", "truck", "bus",
                      "train", "motorcycle", "bicycle")
#: Classes whose labelled boxes find the horizon: typical height (m) and box shape
#: (height / width range) of an upright, whole object.
REFERENCE_OBJECTS = {"car": (1.5, (0.6, 1.1)), "pedestrian": (1.7, (2.0, 4.0)),
                     "person": (1.7, (2.0, 4.0))}

CAMERA_HEIGHT_M = 1.6
MIN_REFERENCE_AREA = 200
MIN_REFERENCES = 10  # per sequence, else DEFAULT_HORIZON_FRACTION
DEFAULT_HORIZON_FRACTION = 0.47  # horizon row / image height
HEIGHT_JITTER = (0.85, 1.15)  # random factor on the typical height
OBJECTS_PER_FRAME = (1, 2)  # inclusive range
MIN_PIXEL_HEIGHT = 24
MAX_HEIGHT_FRACTION = 0.6  # of the frame height
MAX_WIDTH_FRACTION = 0.45  # of the frame width
MIN_ROAD_CONTACT = 0.8  # fraction of the object's lowest row on road pixels
MAX_FOREGROUND_OVERLAP = 0.2  # fraction of the object over car/pedestrian/bicyclist
COLUMN_MARGIN = 8  # pixels between objects of one frame
PLACEMENT_TRIES = 60

#: Segment filters (COCO pixels): area, size, border contact, split/holes, occlusion by things.
MIN_SEGMENT_AREA = 4000
MIN_SEGMENT_SIDE = 48
MAX_BORDER_CONTACT = 0.02  # mask pixels on the image border / (bbox width + height)
MIN_LARGEST_PART = 0.95  # largest connected component / area
MAX_HOLES = 0.05  # hole area / area
MAX_THING_CONTACT = 0.15  # fraction of the outline touching other thing segments (occluders)

ATTRIBUTION = (
    "Derived data, not for redistribution. Background frames: CamVid (Brostow et al., 'Semantic "
    "object classes in video: A high-definition ground truth database', PRL 2009), CC BY-NC 4.0. "
    "Pasted objects: COCO 2017 panoptic (Lin et al. 2014; Kirillov et al. 2019), annotations "
    "CC BY 4.0, images under the Flickr licences listed per object (see the COCO terms of use).")


@dataclass(frozen=True)
class PasteClasses:
    """The training ids the generator uses: road, foreground, horizon references, ignore."""

    road: int
    foreground: Tuple[int, ...]
    #: training id -> (typical height in m, (min, max) box height / width)
    references: Dict[int, Tuple[float, Tuple[float, float]]]
    ignore_index: int


def paste_classes(label_set: LabelSet, road: str = DEFAULT_ROAD_CLASS,
                  foreground: Optional[Sequence[str]] = None,
                  references: Optional[Sequence[str]] = None) -> PasteClasses:
    """Resolve class names against a label set; ValueError names a class it lacks.

    ``foreground`` and ``references`` default to the classes of :data:`DEFAULT_FOREGROUND` and
    :data:`REFERENCE_OBJECTS` the label set has.
    """
    names = label_set.class_names

    def index(name: str, option: str) -> int:
        if name not in names:
            raise ValueError(f"{option} {name!r} is not a class of label set {label_set.name!r} "
                             f"(classes: {list(names)})")
        return names.index(name)

    if foreground is None:
        foreground = [name for name in DEFAULT_FOREGROUND if name in names]
    if references is None:
        references = [name for name in REFERENCE_OBJECTS if name in names]
    unknown = [name for name in references if name not in REFERENCE_OBJECTS]
    if unknown:
        raise ValueError(f"--reference-classes {unknown}: no typical height known; choose from "
                         f"{sorted(REFERENCE_OBJECTS)}")
    return PasteClasses(index(road, "--road-class"),
                        tuple(index(name, "--foreground-classes") for name in foreground),
                        {index(name, "--reference-classes"): REFERENCE_OBJECTS[name]
                         for name in references},
                        label_set.ignore_index)


@dataclass
class CocoObject:
    """A cut-out COCO segment: RGB crop, its mask, and where it comes from."""

    rgb: np.ndarray  # uint8 hxwx3
    mask: np.ndarray  # bool hxw
    category: str
    source: Dict[str, object]  # COCO file, segment id, licence, Flickr URL


@dataclass
class PastedFrame:
    """A frame with objects pasted in: image, labels and the blending alpha."""

    image: np.ndarray
    label: np.ndarray  # 1 anomaly, 0 inlier, 255 void
    semantic: np.ndarray  # training ids, pasted pixels the ignore index
    alpha: np.ndarray  # float32 in [0, 1], union of the pasted objects
    objects: List[Dict[str, object]]


def segment_ids(panoptic_png: np.ndarray) -> np.ndarray:
    """COCO panoptic RGB (H, W, 3) -> segment ids R + 256 G + 256^2 B."""
    rgb = panoptic_png.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def is_usable_segment(mask: np.ndarray, ids: np.ndarray, thing_ids: Sequence[int]) -> bool:
    """Accept whole, unoccluded objects only.

    That is: not touching the image border, one piece, no holes, and not bordering other thing
    segments much (which would likely cover part of it).
    """
    area = int(mask.sum())
    rows, cols = np.nonzero(mask)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    if area < MIN_SEGMENT_AREA or min(height, width) < MIN_SEGMENT_SIDE:
        return False
    border = int(mask[0].sum() + mask[-1].sum() + mask[:, 0].sum() + mask[:, -1].sum())
    if border > MAX_BORDER_CONTACT * (height + width):
        return False
    mask_u8 = mask.astype(np.uint8)
    stats = cv2.connectedComponentsWithStats(mask_u8, connectivity=8)[2]
    if stats[1:, cv2.CC_STAT_AREA].max() < MIN_LARGEST_PART * area:
        return False
    outside = np.pad(1 - mask_u8, 1, constant_values=1)
    background = cv2.connectedComponentsWithStats(outside, connectivity=4)[1]
    holes = int(((background[1:-1, 1:-1] != background[0, 0]) & ~mask).sum())
    if holes > MAX_HOLES * area:
        return False
    ring = cv2.dilate(mask_u8, np.ones((7, 7), np.uint8)).astype(bool) & ~mask
    return np.isin(ids[ring], thing_ids).mean() <= MAX_THING_CONTACT


#: ``usable(mask, ids, other_thing_ids)``: whether a segment's mask is cut out.
SegmentFilter = Callable[[np.ndarray, np.ndarray, List[int]], bool]


def load_objects(coco_root: Path, coco_split: str,
                 category_names: Optional[Collection[str]] = tuple(OBJECT_HEIGHTS_M),
                 usable: SegmentFilter = is_usable_segment) -> List[CocoObject]:
    """All usable objects of a COCO split, in a fixed order (file name, segment id).

    Non-crowd "thing" segments outside :data:`EXCLUDED_SUPERCATEGORIES`, of
    ``category_names`` (None: any category), whose mask ``usable`` accepts (default: whole,
    unoccluded objects, :func:`is_usable_segment`).
    """
    panoptic = json.loads((coco_root / "panoptic" / f"panoptic_{coco_split}.json").read_text())
    categories = {c["id"]: c for c in panoptic["categories"]}
    images = {image["id"]: image for image in panoptic["images"]}
    licences = {licence["id"]: licence for licence in panoptic.get("licenses", [])}
    objects = []
    for annotation in sorted(panoptic["annotations"], key=lambda a: a["file_name"]):
        wanted = [s for s in annotation["segments_info"]
                  if not s["iscrowd"] and categories[s["category_id"]]["isthing"]
                  and categories[s["category_id"]]["supercategory"] not in EXCLUDED_SUPERCATEGORIES
                  and (category_names is None
                       or categories[s["category_id"]]["name"] in category_names)]
        if not wanted:
            continue
        ids = segment_ids(read_rgb(coco_root / "panoptic" / coco_split / annotation["file_name"]))
        thing_ids = [s["id"] for s in annotation["segments_info"]
                     if categories[s["category_id"]]["isthing"]]
        image_info = images[annotation["image_id"]]
        rgb = None
        for segment in sorted(wanted, key=lambda s: s["id"]):
            mask = ids == segment["id"]
            others = [i for i in thing_ids if i != segment["id"]]
            if not mask.any() or not usable(mask, ids, others):
                continue
            if rgb is None:
                rgb = read_rgb(coco_root / "images" / coco_split / image_info["file_name"])
            rows, cols = np.nonzero(mask)
            crop = np.s_[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            licence = licences.get(image_info.get("license"), {})
            source = {"coco_split": coco_split, "file_name": image_info["file_name"],
                      "segment_id": segment["id"], "licence": licence.get("name"),
                      "licence_url": licence.get("url"),
                      "flickr_url": image_info.get("flickr_url")}
            category = categories[segment["category_id"]]["name"]
            objects.append(CocoObject(rgb[crop].copy(), mask[crop].copy(), category, source))
    return objects


def read_train_ids(description: DatasetDescription, path: Path) -> np.ndarray:
    """Read a stored label image as training ids."""
    return description.train_ids(read_label(path), path)


def estimate_horizons(samples: Sequence[Sample], description: DatasetDescription,
                      classes: PasteClasses) -> Dict[str, float]:
    """Estimate the horizon row per group of samples (CamVid: per sequence).

    It is the median over whole (not cut by the image border), upright label components of
    the reference classes (car, pedestrian) of ``bottom - height * CAMERA_HEIGHT_M / real
    height`` (flat ground, level camera); ``DEFAULT_HORIZON_FRACTION`` of the height with too
    few.
    """
    estimates: Dict[str, List[float]] = {}
    frame_height = None
    for sample in samples:
        label = read_train_ids(description, sample.label)
        frame_height = label.shape[0]
        found = estimates.setdefault(sample.group, [])
        for class_index, (real_height, (low, high)) in classes.references.items():
            stats = cv2.connectedComponentsWithStats(
                (label == class_index).astype(np.uint8))[2][1:]
            for left, top, width, height, area in stats:
                inside = (left > 0 and top > 0 and left + width < label.shape[1]
                          and top + height < label.shape[0])
                if inside and area >= MIN_REFERENCE_AREA and low <= height / width <= high:
                    found.append(top + height - height * CAMERA_HEIGHT_M / real_height)
    return {sequence: float(np.median(rows)) if len(rows) >= MIN_REFERENCES
            else DEFAULT_HORIZON_FRACTION * frame_height for sequence, rows in estimates.items()}


def scaled_cutout(obj: CocoObject, width: int, height: int, flip: bool, gain: float):
    """Object resized to ``width`` x ``height`` pixels: (float RGB, alpha) with feathered edges.

    Its colours are multiplied by ``gain`` (see :func:`brightness_gain`).
    """
    mask = obj.mask.astype(np.float32)
    # Resize colour premultiplied by the mask, so no COCO background bleeds into the edges.
    premultiplied = cv2.resize(obj.rgb.astype(np.float32) * mask[..., None], (width, height),
                               interpolation=cv2.INTER_AREA)
    coverage = cv2.resize(mask, (width, height), interpolation=cv2.INTER_AREA)
    rgb = premultiplied / np.maximum(coverage, 1e-3)[..., None] * gain
    alpha = np.clip(cv2.GaussianBlur(coverage, (0, 0), 0.6), 0.0, 1.0)
    alpha[coverage < 0.02] = 0.0
    if flip:
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
    return np.clip(rgb, 0, 255), alpha


def brightness_gain(obj: CocoObject, frame: np.ndarray) -> float:
    """Pull the object's mean brightness half-way (geometrically) toward the frame's."""
    object_mean = float(obj.rgb[obj.mask].mean())
    return float(np.clip(np.sqrt(frame.mean() / max(object_mean, 1.0)), 0.6, 1.5))


def _place(obj: CocoObject, flip: bool, camvid_label: np.ndarray, used_columns: np.ndarray,
           horizon: float, rng: np.random.Generator, classes: PasteClasses):
    """Random (top, left, height, width) in pixels with the object's bottom on road, or None.

    Objects of one frame occupy disjoint columns (``used_columns``, with a margin), so none
    seems to stand on another one nearer to the camera.
    """
    frame_h, frame_w = camvid_label.shape
    real_height = OBJECT_HEIGHTS_M[obj.category] * rng.uniform(*HEIGHT_JITTER)
    aspect = obj.mask.shape[1] / obj.mask.shape[0]
    road = camvid_label == classes.road
    rows = [y for y in range(int(horizon) + 1, frame_h) if road[y].any()]
    heights = {y: round(real_height / CAMERA_HEIGHT_M * (y - horizon)) for y in rows}
    rows = [y for y in rows if MIN_PIXEL_HEIGHT <= heights[y] <= MAX_HEIGHT_FRACTION * frame_h
            and heights[y] * aspect <= MAX_WIDTH_FRACTION * frame_w and heights[y] <= y + 1]
    for _ in range(PLACEMENT_TRIES if rows else 0):
        bottom = rows[rng.integers(len(rows))]
        road_cols = np.flatnonzero(road[bottom])
        centre = road_cols[rng.integers(len(road_cols))]
        height = heights[bottom]
        width = max(1, round(height * aspect))
        top, left = bottom - height + 1, centre - width // 2
        if left < 0 or left + width > frame_w:
            continue
        mask = cv2.resize(obj.mask.astype(np.uint8), (width, height),
                          interpolation=cv2.INTER_NEAREST).astype(bool)
        mask = mask[:, ::-1] if flip else mask
        window = np.s_[top:bottom + 1, left:left + width]
        base = mask[-1]
        if road[bottom, left:left + width][base].mean() < MIN_ROAD_CONTACT:
            continue
        if used_columns[max(0, left - COLUMN_MARGIN):left + width + COLUMN_MARGIN].any():
            continue
        if (np.isin(camvid_label[window][mask], classes.foreground).mean()
                > MAX_FOREGROUND_OVERLAP):
            continue
        return top, left, height, width
    return None


def paste_frame(frame: np.ndarray, camvid_label: np.ndarray, pool: Sequence[CocoObject],
                horizon: float, rng: np.random.Generator,
                classes: PasteClasses) -> PastedFrame:
    """Paste 1-2 random objects from ``pool`` on the road of one frame, below the horizon.

    ``camvid_label``: the frame's training ids; ``horizon`` is the horizon's row.
    """
    canvas = frame.astype(np.float32)
    alpha_total = np.zeros(camvid_label.shape, np.float32)
    used_columns = np.zeros(camvid_label.shape[1], bool)
    placed = []
    for _ in range(rng.integers(OBJECTS_PER_FRAME[0], OBJECTS_PER_FRAME[1] + 1)):
        obj = pool[rng.integers(len(pool))]
        flip = bool(rng.integers(2))
        position = _place(obj, flip, camvid_label, used_columns, horizon, rng, classes)
        if position is None:
            continue
        top, left, height, width = position
        rgb, alpha = scaled_cutout(obj, width, height, flip, brightness_gain(obj, frame))
        window = np.s_[top:top + alpha.shape[0], left:left + alpha.shape[1]]
        canvas[window] = alpha[..., None] * rgb + (1.0 - alpha[..., None]) * canvas[window]
        alpha_total[window] = np.maximum(alpha_total[window], alpha)
        used_columns[left:left + alpha.shape[1]] = True
        placed.append({"category": obj.category, "source": obj.source, "flipped": flip,
                       "box_xywh": [int(left), int(top), int(alpha.shape[1]), int(alpha.shape[0])],
                       "pixels": int((alpha > 0.5).sum())})
    pasted = alpha_total > 0.5
    label = np.where(camvid_label == classes.ignore_index, 255, 0).astype(np.uint8)
    label[pasted] = 1
    semantic = camvid_label.copy()
    semantic[pasted] = classes.ignore_index
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return PastedFrame(image, label, semantic, alpha_total, placed)


def frame_rng(seed: int, stem: str) -> np.random.Generator:
    """Per-frame generator: depends on the seed and the frame's name only."""
    return np.random.default_rng([seed, zlib.crc32(stem.encode())])


def generate(split: str, out: Path, seed: int, limit: Optional[int] = None,
             root: Optional[Path] = None, coco_root: Path = DEFAULT_COCO,
             progress: bool = True, dataset: str = DEFAULT_DATASET,
             road_class: str = DEFAULT_ROAD_CLASS, foreground: Optional[Sequence[str]] = None,
             references: Optional[Sequence[str]] = None,
             coco_split: Optional[str] = None) -> Dict[str, object]:
    """Write the benchmark for one split of a described dataset into ``out``.

    ``dataset``: a dataset description (built-in name or YAML path) at ``root`` (default: the
    description's); ``road_class`` the class objects stand on; ``coco_split`` the COCO objects
    pasted (default :data:`COCO_SPLIT_FOR` of ``split``). Returns the manifest.
    """
    description = load_description(dataset)
    classes = paste_classes(description.label_set, road_class, foreground, references)
    if coco_split is None:
        if split not in COCO_SPLIT_FOR:
            raise ValueError(f"split {split!r} has no default COCO object pool (defaults: "
                             f"{COCO_SPLIT_FOR}); give --coco-split")
        coco_split = COCO_SPLIT_FOR[split]
    pool = load_objects(coco_root, coco_split)
    if not pool:
        raise RuntimeError(f"no usable objects in {coco_root} ({coco_split})")
    samples = list_samples(description, description.resolve_root(root, "--root"), split)
    horizons = estimate_horizons(samples, description, classes)
    samples = samples[:limit]
    for folder in ("images", "labels", "semantic"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    frames = []
    for sample in tqdm(samples, desc=f"{description.name}_paste {split}", unit="frame",
                       disable=not progress):
        result = paste_frame(read_rgb(sample.image), read_train_ids(description, sample.label),
                             pool, horizons[sample.group], frame_rng(seed, sample.name), classes)
        write_rgb(out / "images" / f"{sample.name}.png", result.image)
        for folder, array in (("labels", result.label), ("semantic", result.semantic)):
            if not cv2.imwrite(str(out / folder / f"{sample.name}.png"), array):
                raise OSError(f"cannot write {out / folder / f'{sample.name}.png'}")
        frames.append({"stem": sample.name, "source_image": sample.image.name,
                       "objects": result.objects,
                       "anomaly_pixels": int((result.label == 1).sum()),
                       "valid_pixels": int((result.label != 255).sum())})
    names = description.label_set.class_names
    manifest = {
        "benchmark": f"{description.title}-Paste", "dataset": description.name, "split": split,
        "seed": seed, "coco_split": coco_split,
        "labels": {"1": "pasted object (alpha > 0.5)", "0": "inlier",
                   "255": f"{description.title} ignore (void)"},
        "semantic_void": classes.ignore_index, "road_class": names[classes.road],
        "foreground_classes": [names[i] for i in classes.foreground],
        "reference_classes": [names[i] for i in classes.references],
        "camera_height_m": CAMERA_HEIGHT_M,
        "horizon_rows": {group: round(row, 1) for group, row in sorted(horizons.items())},
        "object_pool_size": len(pool),
        "object_pool_categories": sorted({obj.category for obj in pool}),
        "frames": frames, "attribution": ATTRIBUTION,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def summarize(manifest: Dict[str, object]) -> str:
    """One line: frames, objects, anomaly pixel fraction."""
    frames = manifest["frames"]
    objects = sum(len(f["objects"]) for f in frames)
    anomaly = sum(f["anomaly_pixels"] for f in frames)
    valid = sum(f["valid_pixels"] for f in frames)
    return (f"{len(frames)} frames, {objects} objects from a pool of "
            f"{manifest['object_pool_size']} ({manifest['coco_split']}), anomaly pixels "
            f"{100.0 * anomaly / max(valid, 1):.2f}% of valid pixels")


def _names(text: str) -> List[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def main(argv: Optional[List[str]] = None) -> int:
    parser = command_parser("python -m training.data.camvid_paste",
                            "Generate the CamVid-Paste anomaly benchmark (or its twin on any "
                            "described dataset with a road class).",
                            "<out>/images/*.png, labels/*.png (1 anomaly, 0 inlier, 255 void), "
                            "semantic/*.png (training ids, pasted pixels the ignore index) and "
                            "manifest.json (seed, objects, sources).")
    parser.add_argument("--split", required=True,
                        help="dataset split (with a default COCO object pool: "
                             f"{sorted(COCO_SPLIT_FOR)})")
    parser.add_argument("--out", type=Path,
                        help=f"output folder (default {DEFAULT_OUT.parent}/<dataset>_paste/"
                             "<split>)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--limit", type=int, help="only the first N frames")
    parser.add_argument("--dataset", default=DEFAULT_DATASET,
                        help="dataset description: a built-in name or a YAML file "
                             f"(default {DEFAULT_DATASET})")
    parser.add_argument("--root", type=Path,
                        help="the dataset's folder (default: the description's root)")
    parser.add_argument("--road-class", default=DEFAULT_ROAD_CLASS,
                        help=f"class the objects stand on (default {DEFAULT_ROAD_CLASS!r})")
    parser.add_argument("--foreground-classes", type=_names,
                        help="comma-separated classes objects must not largely cover (default: "
                             f"those of {', '.join(DEFAULT_FOREGROUND)} the label set has)")
    parser.add_argument("--reference-classes", type=_names,
                        help="comma-separated classes whose boxes find the horizon, of "
                             f"{', '.join(REFERENCE_OBJECTS)} (default: those the label set has)")
    parser.add_argument("--coco-split", choices=sorted(set(COCO_SPLIT_FOR.values())),
                        help=f"COCO objects to paste (default {COCO_SPLIT_FOR})")
    parser.add_argument("--coco-root", type=Path, default=DEFAULT_COCO,
                        help=f"default {DEFAULT_COCO}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        name = load_description(args.dataset).name
        out = args.out or DEFAULT_OUT.parent / f"{name}_paste" / args.split
        manifest = generate(args.split, out, args.seed, args.limit, args.root, args.coco_root,
                            not args.no_progress, args.dataset, args.road_class,
                            args.foreground_classes, args.reference_classes, args.coco_split)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        print(f"camvid_paste: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}: {summarize(manifest)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
