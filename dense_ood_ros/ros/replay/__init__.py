"""``dense-ood-replay``: a model on a rosbag2 bag, offline or live.

:mod:`.command` (the command line) checks the bag and hands it to :mod:`.offline` (every
frame through the node's own frame pipeline, no ROS graph) or :mod:`.live` (the frames played
into a running node over DDS, by :mod:`.player`, its answers taken by :mod:`.recorder`).
:mod:`.messages` is what both runners share. Bags, ground truth, results and the report are
below, in :mod:`dense_ood_ros.replay`.
"""
