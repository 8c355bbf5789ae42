"""The CamVid 11-class label set (SegNet version): names, ignore label and colour palette."""

import numpy as np

CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "sidewalk", "tree",
    "sign_symbol", "fence", "car", "pedestrian", "bicyclist",
)
NUM_CLASSES = len(CAMVID_CLASSES)
#: Label value of unlabelled (void) pixels, excluded from losses and metrics.
IGNORE_INDEX = 11

#: RGB colour per class (the usual SegNet CamVid colours), row ``NUM_CLASSES`` is void.
CAMVID_PALETTE = np.array(
    [
        [128, 128, 128],  # sky
        [128, 0, 0],  # building
        [192, 192, 128],  # pole
        [128, 64, 128],  # road
        [60, 40, 222],  # sidewalk
        [128, 128, 0],  # tree
        [192, 128, 128],  # sign_symbol
        [64, 64, 128],  # fence
        [64, 0, 128],  # car
        [64, 64, 0],  # pedestrian
        [0, 128, 192],  # bicyclist
        [0, 0, 0],  # void
    ],
    dtype=np.uint8,
)


def colorize(labels: np.ndarray) -> np.ndarray:
    """Map an HxW label image to an HxWx3 RGB image with the CamVid palette."""
    return CAMVID_PALETTE[np.minimum(labels, IGNORE_INDEX)]
