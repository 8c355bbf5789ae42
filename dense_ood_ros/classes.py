"""Deprecated: CamVid's label set as module constants, for code not yet reading a model's.

Every value comes from the built-in CamVid description (``dense_ood_ros/datasets/camvid.yaml``);
new code takes the label set of the model file instead (``Detector.label_set``,
``Backend.label_set``, :mod:`dense_ood_ros.label_set`). Still imported by ``benchmark.py``,
``replay.py``, ``ros/live_replay.py`` and ``scripts/profile_cpu.py``; remove it once they switch.
"""

from dense_ood_ros.label_set import description_label_set

CAMVID = description_label_set("camvid")
CAMVID_CLASSES = CAMVID.class_names
NUM_CLASSES = CAMVID.num_classes
#: Label value of unlabelled (void) pixels, excluded from losses and metrics.
IGNORE_INDEX = CAMVID.ignore_index
#: RGB colour per class, row ``NUM_CLASSES`` is void.
CAMVID_PALETTE = CAMVID.palette
colorize = CAMVID.colorize
