"""Run the training stages of a config: ``python -m training.train --config training/configs/X.yaml``.

Stages (in the order the config lists them):
  ce       cross-entropy pre-training of the segmentation model;
  flow     maximum-likelihood pre-training of the normalizing flow on inlier patches;
  nflowjs  joint fine-tuning: flow samples pasted as negatives, JSD-to-uniform loss on them.
Every stage checkpoints as it goes and resumes where it stopped when the command is run
again; a finished stage is skipped. Multi-process: ``torchrun --nproc_per_node N -m training.train ...``.
"""

import argparse
import json
from pathlib import Path

import torch
import yaml

from training.common import DistributedContext
from training.config import load_config, parse_overrides
from training.stages import STAGES


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML config in training/configs/")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. ce.epochs=1 data.limit_train=8")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.set)
    except ValueError as err:
        parser.error(str(err))
    config = load_config(args.config, overrides)
    torch.set_num_threads(config.threads)
    ctx = DistributedContext()
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    if ctx.is_main:
        (Path(config.output_dir) / "config.yaml").write_text(
            yaml.safe_dump(json.loads(json.dumps(config, default=lambda o: o.__dict__))))
    for stage in config.stages:
        STAGES[stage](config, ctx)


if __name__ == "__main__":
    main()
