"""Real negatives for NFlowJS: COCO objects pasted into the training crops.

Beside (or instead of) the flow's synthetic patches, ``nflowjs.negatives: [flow, objects]``
pastes one cut-out COCO object into each training crop (with probability
``nflowjs.objects.probability``); its pixels get the same JSD-to-uniform loss as the flow's
patches and no cross-entropy. Objects are every non-crowd "thing" segment of the configured
COCO panoptic split whose category is not, and does not look like, an inlier class (persons,
vehicles and street furniture are never used: :data:`EXCLUDED_SUPERCATEGORIES`), at least
:data:`MIN_OBJECT_AREA` pixels and in one piece. Unlike CamVid-Paste's objects they may be
truncated or occluded: a negative need not be a whole object.

COCO val2017 objects are CamVid-Paste test's anomalies, so training may not paste them
(``training.config`` refuses ``nflowjs.objects.split: val2017``).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np
import torch

from training.data.camvid_paste import (EXCLUDED_SUPERCATEGORIES, CocoObject, brightness_gain,
                                        load_objects, scaled_cutout)

#: COCO split whose objects CamVid-Paste test pastes: never a training negative.
RESERVED_SPLIT = "val2017"
MIN_OBJECT_AREA = 1500  # COCO pixels
MIN_LARGEST_PART = 0.9  # largest connected component / area


class NegativesError(ValueError):
    """The object negatives cannot be used (folder, annotations, no objects); names the key."""


def _one_piece(mask: np.ndarray) -> bool:
    stats = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)[2]
    return stats[1:, cv2.CC_STAT_AREA].max() >= MIN_LARGEST_PART * mask.sum()


def _one_piece_and_large(mask: np.ndarray, ids: np.ndarray, other_things) -> bool:
    """At least :data:`MIN_OBJECT_AREA` pixels, mostly one connected piece."""
    area = int(mask.sum())
    if area < MIN_OBJECT_AREA:
        return False
    stats = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)[2]
    return stats[1:, cv2.CC_STAT_AREA].max() >= MIN_LARGEST_PART * area


def load_negative_objects(root: Path, split: str) -> List[CocoObject]:
    """Cut out every usable negative object of a COCO panoptic split, in a fixed order.

    :class:`NegativesError` names ``nflowjs.objects.root`` when the annotations are missing
    or no object is usable.
    """
    annotations_file = root / "panoptic" / f"panoptic_{split}.json"
    if not annotations_file.is_file():
        raise NegativesError(f"config key 'nflowjs.objects.root': no COCO panoptic annotations "
                             f"{annotations_file} (split {split!r})")
    objects = load_objects(root, split, category_names=None, usable=_one_piece_and_large)
    if not objects:
        raise NegativesError(f"config key 'nflowjs.objects.root': {root} ({split}) holds no "
                             f"usable negative object (non-crowd things outside "
                             f"{list(EXCLUDED_SUPERCATEGORIES)}, >= {MIN_OBJECT_AREA} px)")
    return objects


@dataclass
class ObjectPaster:
    """Pastes one random object per crop, ``height_range`` of the crop's height tall."""

    objects: List[CocoObject]
    probability: float
    height_range: Tuple[float, float]

    def paste(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator,
              ignore_index: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Paste into float (N, 3, H, W) ``images`` in [0, 255].

        Returns the images, the labels with every touched pixel set to ``ignore_index`` and
        the negative mask (N, H, W): the object's pixels (alpha > 0.5).
        """
        images, labels = images.clone(), labels.clone()
        negative = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
        crop_h, crop_w = labels.shape[-2:]
        for i in range(images.shape[0]):
            if rng.random() >= self.probability:
                continue
            obj = self.objects[rng.integers(len(self.objects))]
            height = max(8, round(rng.uniform(*self.height_range) * crop_h))
            width = max(8, round(height * obj.mask.shape[1] / obj.mask.shape[0]))
            if width > crop_w:  # a wide object: as wide as the crop
                height, width = max(8, round(height * crop_w / width)), crop_w
            top = int(rng.integers(0, crop_h - height + 1))
            left = int(rng.integers(0, crop_w - width + 1))
            frame = images[i].permute(1, 2, 0).cpu().numpy()
            rgb, alpha = scaled_cutout(obj, width, height, bool(rng.integers(2)),
                                       brightness_gain(obj, frame))
            window = np.s_[top:top + height, left:left + width]
            alpha_t = torch.from_numpy(np.ascontiguousarray(alpha)).to(images.device)
            rgb_t = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).to(images.device)
            region = images[i, :, window[0], window[1]]
            images[i, :, window[0], window[1]] = (alpha_t * rgb_t.permute(2, 0, 1)
                                                  + (1.0 - alpha_t) * region)
            labels[i, window[0], window[1]][alpha_t > 0] = ignore_index
            negative[i, window[0], window[1]] = alpha_t > 0.5
        return images, labels, negative
