"""Run the training stages of a config.

    python -m training.train --config training/configs/X.yaml

Stages (in the order the config lists them):
  ce       cross-entropy pre-training of the segmentation model;
  flow     maximum-likelihood pre-training of the normalizing flow on inlier patches;
  nflowjs  joint fine-tuning: flow samples pasted as negatives, JSD-to-uniform loss on them.
Every stage checkpoints as it goes and resumes where it stopped when the command is run
again; a finished stage is skipped. Multi-process:
``torchrun --nproc_per_node N -m training.train ...``.
"""

import json
from pathlib import Path

import yaml

from dense_ood_ros.cli import command_parser
from training.common import DistributedContext, configure_process
from training.config import add_config_arguments, config_from_args
from training.stages import STAGES, StepRuntime


def main(argv=None) -> None:
    parser = command_parser(
        "python -m training.train", __doc__,
        "<output_dir>/config.yaml (the resolved config); per stage <output_dir>/<stage>/: "
        "log.csv, last.pt (resume state), losses.png; ce and nflowjs: model.pt and "
        "metrics.json; flow and nflowjs: flow.pt and samples.png.")
    add_config_arguments(parser, "override config keys, e.g. ce.epochs=1 data.limit_train=8")
    args = parser.parse_args(argv)
    config = config_from_args(parser, args)
    configure_process(config.threads, config.reuse_freed_memory)
    try:
        ctx = DistributedContext(config.device)
        StepRuntime.from_config(config, ctx)  # amp without CUDA fails here, before any stage
    except ValueError as err:
        parser.error(str(err))
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    if ctx.is_main:
        (Path(config.output_dir) / "config.yaml").write_text(
            yaml.safe_dump(json.loads(json.dumps(config, default=lambda o: o.__dict__))))
    for stage in config.stages:
        STAGES[stage](config, ctx)


if __name__ == "__main__":
    main()
