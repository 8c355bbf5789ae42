"""Bag replay without ROS: bags, ground truth, results and the report.

From the bottom up: :mod:`.bag_reader` and :mod:`.bag_writer` (rosbag2 bags as serialized
messages), :mod:`.ground_truth` (each frame's labels), :mod:`.results` (what each frame gave)
and :mod:`.report` (the output folder); :mod:`.make_bag` is ``dense-ood-make-bag``. The
runners that send the frames through the detector node's code are in
:mod:`dense_ood_ros.ros.replay`, above this package: nothing here imports from there.
"""
