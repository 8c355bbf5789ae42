"""Model checkpoints: one self-describing file, loaded safely (``weights_only=True``).

A checkpoint is a dict of plain Python values and tensors::

    {"format": "dense_ood_ros/model/v1", "model": "efficientnet_lite0_swiftnet",
     "num_classes": 11, "class_names": [...], "input_size": [360, 480],
     "state_dict": {...}, "meta": {...}}
"""

from pathlib import Path
from typing import Any, Dict, Sequence, Tuple, Union

import torch
from torch import nn

from dense_ood_ros.models import build_model

CHECKPOINT_FORMAT = "dense_ood_ros/model/v1"
_REQUIRED_KEYS = ("format", "model", "num_classes", "class_names", "input_size", "state_dict")
#: The first bytes of the zip archive ``torch.save`` writes.
_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt or does not match the model it declares."""


def save_checkpoint(path: Union[str, Path], model: nn.Module, model_name: str,
                    class_names: Sequence[str], input_size: Tuple[int, int],
                    meta: Dict[str, Any]) -> None:
    """Write a model checkpoint atomically (temporary file, then rename)."""
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": model_name,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "input_size": [int(input_size[0]), int(input_size[1])],
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def read_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """Load and validate a checkpoint dict; :class:`CheckpointError` names the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with path.open("rb") as file:
            start = file.read(len(_ZIP_MAGIC))
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if start != _ZIP_MAGIC:  # torch.load would fail with e.g. "IndexError: pop from empty list"
        raise CheckpointError(f"cannot read checkpoint {path}: not a PyTorch checkpoint "
                              f"(torch.save writes a zip archive; the file starts {start!r})")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(f"cannot read checkpoint {path}: "
                              f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a dense_ood_ros model checkpoint "
                              f"(expected format {CHECKPOINT_FORMAT!r})")
    missing = [key for key in _REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks keys {missing}")
    return payload


def load_model(path: Union[str, Path]) -> Tuple[nn.Module, Dict[str, Any]]:
    """Build the model a checkpoint declares and load its weights (eval mode).

    Returns the model and the checkpoint dict without its state dict.
    """
    payload = read_checkpoint(path)
    try:
        model = build_model(payload["model"], payload["num_classes"], pretrained=False)
        model.load_state_dict(payload.pop("state_dict"))
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} does not match "
                              f"model {payload['model']!r}: {exc}") from exc
    return model.eval(), payload
