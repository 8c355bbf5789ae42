"""One camera message -> the detector node's output messages.

The node, bag replay (offline and live) and the stream benchmark run every frame through
:class:`FramePipeline`: convert the message (:func:`conversions.message_to_rgb`) -> the
:class:`~dense_ood_ros.detector.Detector` (encode -> infer -> decode) -> output messages that
carry the input's header. A message that cannot become a frame raises a
:class:`~dense_ood_ros.ros.conversions.BadImage` whose ``reason`` names the kind of fault.
"""

import copy
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from dense_ood_ros.detector import Detector, DetectorOutput
from dense_ood_ros.preprocessing import check_rgb_frame
from dense_ood_ros.ros import (CAMERA_INFO_TOPIC, COLOR_TOPIC, LABELS_TOPIC, MASK_TOPIC,
                               SCORE_TOPIC, image_outputs)
from dense_ood_ros.ros.conversions import (DEFAULT_MAX_INPUT_PIXELS, MalformedImage,
                                           message_to_rgb, numpy_to_image)


@dataclass(frozen=True)
class PipelineOptions:
    """What is published for each frame."""

    score: str = "jsd"
    publish_color: bool = True
    #: Pixels with a score at or above it are 255 in the anomaly mask; None: no mask.
    mask_threshold: Optional[float] = None
    max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS
    #: "camera": outputs at the input image's size; "network": at the model's input size
    #: (far less bandwidth at 720p and above; a rescaled camera_info tells the geometry).
    output_resolution: str = "camera"


OUTPUT_RESOLUTIONS = ("camera", "network")


@dataclass
class FrameResult:
    """One frame's outputs: the arrays (for metrics) and the messages (in publish order).

    ``frame`` is the RGB frame the detector ran on.
    """

    output: DetectorOutput
    messages: Dict[str, Any]
    frame: np.ndarray


def scale_camera_info(info: Any, height: int, width: int) -> Any:
    """Return a copy of a CameraInfo for the image resized to ``height`` x ``width``.

    K and P are scaled as image_proc's resize node does; distortion is unchanged.
    """
    scaled = copy.deepcopy(info)
    scale_x, scale_y = width / info.width, height / info.height
    k, p = list(info.k), list(info.p)
    k[0], k[2], k[4], k[5] = k[0] * scale_x, k[2] * scale_x, k[4] * scale_y, k[5] * scale_y
    p[0], p[2], p[3] = p[0] * scale_x, p[2] * scale_x, p[3] * scale_x
    p[5], p[6] = p[5] * scale_y, p[6] * scale_y
    scaled.k, scaled.p = k, p
    scaled.height, scaled.width = height, width
    return scaled


def anomaly_mask(score: np.ndarray, threshold: float) -> np.ndarray:
    """Return the mono8 mask: 255 where ``score >= threshold``, else 0."""
    return np.where(score >= threshold, np.uint8(255), np.uint8(0))


class FramePipeline:
    """Turns camera messages (Image or CompressedImage) into the node's output messages."""

    def __init__(self, detector: Detector, options: PipelineOptions = PipelineOptions()):
        if options.output_resolution not in OUTPUT_RESOLUTIONS:
            raise ValueError(f"output_resolution {options.output_resolution!r}: choose one of "
                             f"{list(OUTPUT_RESOLUTIONS)}")
        if options.score not in detector.backend.score_names:
            raise ValueError(f"score {options.score!r} is not computed by the backend "
                             f"(it computes {list(detector.backend.score_names)})")
        self.detector = detector
        self.options = options
        #: Colours of the semantic_color output: the model file's label set (a lookup table).
        self.colorize = detector.label_set.colorize

    @property
    def topics(self) -> Tuple[str, ...]:
        """Image output names (under ``~/output/``) in publish order.

        camera_info is published beside them only while one comes in.
        """
        return image_outputs(self.options.publish_color, self.options.mask_threshold is not None)

    def frame(self, msg: Any) -> np.ndarray:
        """Convert a camera message to the RGB frame the detector runs on (BadImage if not)."""
        frame = message_to_rgb(msg, self.options.max_input_pixels)
        try:
            check_rgb_frame(frame)  # e.g. a 3x3 image: too small to segment
        except ValueError as exc:
            raise MalformedImage(str(exc)) from None
        return frame

    def __call__(self, msg: Any, camera_info: Optional[Any] = None) -> FrameResult:
        """Run one message; all output messages are built before any is returned.

        ``camera_info`` (the input camera's) adds CAMERA_INFO_TOPIC, scaled to the output
        resolution and with the image's header, when it is for this image's size (else none).
        """
        frame = self.frame(msg)
        network = self.options.output_resolution == "network"
        output = self.detector(frame, self.detector.backend.input_size if network else None)
        score = output.scores[self.options.score]
        header = msg.header
        messages = {LABELS_TOPIC: numpy_to_image(output.labels, "mono8", header)}
        if self.options.publish_color:
            messages[COLOR_TOPIC] = numpy_to_image(self.colorize(output.labels), "rgb8", header)
        messages[SCORE_TOPIC] = numpy_to_image(score, "32FC1", header)
        if self.options.mask_threshold is not None:
            messages[MASK_TOPIC] = numpy_to_image(
                anomaly_mask(score, self.options.mask_threshold), "mono8", header)
        if camera_info is not None and (camera_info.height, camera_info.width) == frame.shape[:2]:
            info = scale_camera_info(camera_info, *output.labels.shape)
            info.header = header
            messages[CAMERA_INFO_TOPIC] = info
        return FrameResult(output, messages, frame)
