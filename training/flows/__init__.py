"""Normalizing flows used to generate synthetic negative patches (training only).

:func:`flow_from_config` builds the flow a training config describes and
:func:`load_flow_weights` loads saved weights into it, naming the config keys on a mismatch;
the training stages and ``training.plots`` both load flows through them.
"""

from pathlib import Path
from typing import Dict

import torch

from training.config import TrainConfig
from training.flows.glow import Glow


def flow_from_config(config: TrainConfig) -> Glow:
    """Build the Glow flow the config's ``flow`` section describes (untrained)."""
    f = config.flow
    return Glow(num_levels=f.levels, steps_per_level=f.steps_per_level, hidden=f.hidden,
                seed=config.seed)


def load_flow_weights(flow: Glow, weights: Dict[str, torch.Tensor], source: Path) -> None:
    """Load a saved flow's weights; a shape mismatch names the config keys that set them."""
    try:
        flow.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(f"{source} does not match the flow the config describes (flow.levels, "
                         "flow.steps_per_level, flow.hidden); pass the values it was trained "
                         f"with, e.g. --set flow.hidden=128: {str(err).splitlines()[0]}") from err
