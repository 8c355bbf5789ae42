"""``dense-ood-demo``: the detector node end to end over DDS on a few shipped CamVid frames.

Starts the ``detector`` node as its own process, publishes each demo frame on its camera
topic, collects the three outputs, and saves per frame a side-by-side PNG
(input | semantic segmentation | anomaly-score heat map) into the output folder. The class
legend is the model's label set, as the node publishes it on its latched
``~/output/label_set`` topic. Prints the end-to-end latency per frame and the throughput,
then stops the node.
"""

import argparse
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from std_msgs.msg import String

from dense_ood_ros.backends import BACKEND_NAMES
from dense_ood_ros.cli import add_out, add_score, command_parser
from dense_ood_ros.io import ImageFolderError, list_images, read_rgb, write_rgb
from dense_ood_ros.label_set import LabelSet, LabelSetError
from dense_ood_ros.ros import (COLOR_TOPIC, LABEL_SET_TOPIC, LABELS_TOPIC, SCORE_TOPIC,
                               node_topic, output_topic, package_path)
from dense_ood_ros.ros.client import (DetectorClient, init_client_context, start_detector,
                                      stop_detector, use_large_data_profile)
from dense_ood_ros.ros.conversions import image_to_numpy, numpy_to_image
from dense_ood_ros.ros.node import label_set_qos
from dense_ood_ros.visualization import heat_map, score_range

#: The demo's node runs in its own namespace: /dense_ood_demo/detector/input/image ...
NAMESPACE = "dense_ood_demo"
FRAME_ID = "camera"

TITLE_HEIGHT = 30
#: Footer height for up to LEGEND_COLUMNS * 3 classes; more classes make it taller.
FOOTER_HEIGHT = 84
LEGEND_COLUMNS = 4
LEGEND_ROW = 22
GAP = 8
FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE, GREY, DARK = (255, 255, 255), (200, 200, 200), (30, 30, 30)
SEGMENTATION_OPACITY = 0.6


def _text(canvas: np.ndarray, text: str, origin: Tuple[int, int], scale: float = 0.45,
          color: Tuple[int, int, int] = GREY, thickness: int = 1) -> None:
    cv2.putText(canvas, text, origin, FONT, scale, color, thickness, cv2.LINE_AA)


def footer_height(label_set: LabelSet) -> int:
    """Height of the result picture's footer: room for the label set's legend."""
    rows = math.ceil(label_set.num_classes / LEGEND_COLUMNS)
    return max(FOOTER_HEIGHT, 10 + rows * LEGEND_ROW + 6)


def _class_legend(footer: np.ndarray, left: int, width: int, label_set: LabelSet) -> None:
    cell = width // LEGEND_COLUMNS
    for index, (name, color) in enumerate(zip(label_set.class_names, label_set.colors)):
        x = left + (index % LEGEND_COLUMNS) * cell
        y = 10 + (index // LEGEND_COLUMNS) * LEGEND_ROW
        cv2.rectangle(footer, (x, y), (x + 14, y + 14), color, -1)
        cv2.rectangle(footer, (x, y), (x + 14, y + 14), GREY, 1)
        _text(footer, name, (x + 20, y + 12), 0.42)


def _color_bar(footer: np.ndarray, left: int, width: int,
               value_range: Tuple[float, float]) -> None:
    bar_left, bar_right, top, bottom = left + 10, left + width - 10, 14, 34
    ramp = np.linspace(value_range[0], value_range[1], bar_right - bar_left, dtype=np.float32)
    footer[top:bottom, bar_left:bar_right] = heat_map(ramp[None], value_range)
    cv2.rectangle(footer, (bar_left, top), (bar_right - 1, bottom), GREY, 1)
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = bar_left + int(fraction * (bar_right - bar_left - 1))
        cv2.line(footer, (x, bottom), (x, bottom + 4), GREY, 1)
        label = f"{value_range[0] + fraction * (value_range[1] - value_range[0]):.2f}"
        _text(footer, label, (min(max(x - 14, left), left + width - 36), bottom + 18), 0.4)
    _text(footer, "confident (in-distribution)", (bar_left, bottom + 40), 0.42)
    _text(footer, "anomalous", (bar_right - 80, bottom + 40), 0.42, WHITE)


def render_result(rgb: np.ndarray, color: np.ndarray, score: np.ndarray, score_name: str,
                  caption: str, label_set: LabelSet) -> np.ndarray:
    """One RGB picture: input | segmentation overlay + class legend | heat map + colour bar.

    The legend shows ``label_set``'s classes in its colours.
    """
    height, width = rgb.shape[:2]
    value_range = score_range(score)
    overlay = cv2.addWeighted(rgb, 1.0 - SEGMENTATION_OPACITY, color, SEGMENTATION_OPACITY, 0.0)
    panels = [(rgb, "input"), (overlay, "semantic segmentation"),
              (heat_map(score, value_range), f"anomaly score ({score_name})")]
    canvas = np.full((TITLE_HEIGHT + height + footer_height(label_set), 3 * width + 2 * GAP, 3),
                     DARK, np.uint8)
    footer = canvas[TITLE_HEIGHT + height:]
    for index, (panel, title) in enumerate(panels):
        left = index * (width + GAP)
        canvas[TITLE_HEIGHT:TITLE_HEIGHT + height, left:left + width] = panel
        _text(canvas, title, (left + 8, 21), 0.6, WHITE)
    _text(footer, caption, (8, 22), 0.45)
    _class_legend(footer, width + GAP, width, label_set)
    _color_bar(footer, 2 * (width + GAP), width, value_range)
    return canvas


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = command_parser("dense-ood-demo", __doc__,
                            "<out>/<frame>_dense_ood.png per frame (input | segmentation | "
                            "anomaly score); per-frame latency and throughput on stdout.")
    parser.add_argument("--frames", type=Path, default=package_path("demo"),
                        help="folder of input images (default: the shipped CamVid demo frames)")
    add_out(parser, "folder for the result PNGs (default: demo_output)", Path("demo_output"))
    parser.add_argument("--model", type=Path,
                        help="model file (default: the node's, models/default.pt)")
    parser.add_argument("--backend", default="auto", choices=BACKEND_NAMES,
                        help="inference backend (default auto: TensorRT on an NVIDIA GPU, "
                             "else ONNX Runtime)")
    add_score(parser)
    parser.add_argument("--startup-timeout", type=float, default=90.0,
                        help="seconds to wait for the node to start and answer the first frame")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for each frame's outputs")
    return parser.parse_args(argv)


def _stamped_image(client: DetectorClient, rgb: np.ndarray):
    msg = numpy_to_image(rgb, "rgb8")
    msg.header.stamp = client.node.get_clock().now().to_msg()
    msg.header.frame_id = FRAME_ID
    return msg


class LabelSetListener:
    """Receives the node's latched label set (``~/output/label_set``) on a client's node."""

    def __init__(self, client: DetectorClient, namespace: str):
        self.client = client
        self.label_set: Optional[LabelSet] = None
        self.error: Optional[str] = None
        self.topic = node_topic(output_topic(LABEL_SET_TOPIC), namespace)
        self.subscription = client.node.create_subscription(String, self.topic, self._on_message,
                                                            label_set_qos())

    def _on_message(self, msg: String) -> None:
        try:
            self.label_set = LabelSet.from_json(msg.data, f"label set on {self.topic}")
        except LabelSetError as exc:
            self.error = str(exc)

    def wait(self, timeout_s: float) -> LabelSet:
        """Spin until the label set came; TimeoutError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.label_set is None:
            if self.error is not None:
                raise RuntimeError(self.error)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no label set on {self.topic} within {timeout_s:.0f} s")
            self.client.spin_once()
        return self.label_set


def run_frames(client: DetectorClient, frames: List[Path], args: argparse.Namespace,
               label_sets: LabelSetListener) -> None:
    """Warm the node up, then send the frames one at a time, saving and reporting each result."""
    client.wait_until_connected(args.startup_timeout)
    warm_up = client.request(_stamped_image(client, read_rgb(frames[0])), args.startup_timeout)
    label_set = label_sets.wait(args.timeout)
    print(f"node ready; first answer (warm-up) after {warm_up.latency_s:.2f} s; label set "
          f"{label_set.name!r}: {', '.join(label_set.class_names)}")
    latencies = []
    for path in frames:
        rgb = read_rgb(path)
        reply = client.request(_stamped_image(client, rgb), args.timeout)
        latencies.append(reply.latency_s)
        labels = image_to_numpy(reply.outputs[LABELS_TOPIC])
        score = image_to_numpy(reply.outputs[SCORE_TOPIC])
        color = image_to_numpy(reply.outputs[COLOR_TOPIC])
        caption = f"{path.name}: {1000 * reply.latency_s:.0f} ms end to end"
        output_path = args.out / f"{path.stem}_dense_ood.png"
        write_rgb(output_path, render_result(rgb, color, score, args.score, caption, label_set))
        resent = f", sent {reply.sends}x" if reply.sends > 1 else ""
        print(f"{path.name}: {1000 * reply.latency_s:6.0f} ms{resent}  "
              f"classes {len(np.unique(labels)):2d}  score mean "
              f"{score.mean():.3f} max {score.max():.3f}  -> {output_path}")
    mean_latency = sum(latencies) / len(latencies)
    print(f"{len(latencies)} frames: mean end-to-end latency {1000 * mean_latency:.0f} ms, "
          f"{1.0 / mean_latency:.2f} FPS (one frame in flight; PNG writing excluded)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        frames = list_images(args.frames, "demo frame")
    except ImageFolderError as exc:
        print(f"dense-ood-demo: error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    # A private DDS domain unless the caller chose one, so the demo never talks to other ROS
    # systems.
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    parameters = {"backend": args.backend, "score": args.score, "publish_color": True}
    if args.model:
        parameters["model_path"] = str(args.model.resolve())
    print(f"starting the detector node (ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}) ...",
          flush=True)
    use_large_data_profile()  # camera-sized frames over Fast DDS (the node gets it too)
    process = start_detector(parameters, namespace=NAMESPACE)
    context = init_client_context()
    try:
        with DetectorClient(NAMESPACE, detector_process=process,
                            context=context, node_name="dense_ood_demo") as client:
            run_frames(client, frames, args, LabelSetListener(client, NAMESPACE))
    except (TimeoutError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        context.try_shutdown()
        exit_code = stop_detector(process)
        print(f"detector node stopped (exit code {exit_code})")
    return 0
