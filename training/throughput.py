"""Training-step throughput, before and after: ``python -m training.throughput --config X``.

Times the real training steps of the ``ce`` and ``nflowjs`` stages, with the step functions,
model set-up and data loader of training/stages.py, in images per second of the step and the
data loading that feeds it. Two settings are compared: "before" (the config with the
``--before`` overrides; by default the settings from before the speed-ups) and "after" (with
``--after``). Each measurement runs in a fresh process (threads and the allocator are
per-process settings), ``--rounds`` times, before and after interleaved, so that load from
other processes hits both alike. A measurement's images/s is the batch size over its median
step time (data loading included); the ratio is that of the best measurements of each
setting (other load only ever slows a run down), the ratio of the medians is reported too.
The logged values of the steps (the losses) of both settings are compared: "identical" means
bit-identical.
"""

import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from dense_ood_ros.cli import command_parser
from training.common import DistributedContext, configure_process, seed_everything
from training.config import TrainConfig, add_config_arguments, load_config, parse_overrides
from training.flows import flow_from_config
from training.stages import (StepRuntime, ce_training, nflowjs_training, segmentation_model,
                             set_epoch, train_loader)

#: The settings before the speed-ups of issue 16 (the shipped configs had threads: 2).
BEFORE = ["threads=2", "reuse_freed_memory=false", "data.cache_in_memory=false",
          "channels_last=false"]
MEASURED_STAGES = ("ce", "nflowjs")


def _stage_step(config: TrainConfig, stage: str, ctx: DistributedContext):
    """Return (model, step) of a stage, set up as the stage sets them up.

    nflowjs starts from the CE stage's untrained model and an untrained flow: the same work.
    """
    runtime = StepRuntime.from_config(config, ctx)
    if stage == "ce":
        model, _, step = ce_training(config, runtime)
        return model, step
    model = segmentation_model(config)
    flow = flow_from_config(config) if "flow" in config.nflowjs.negatives else None
    _, _, step = nflowjs_training(config, ctx, runtime, model, flow)
    return model, step


def measure(config_path: Path, overrides: Dict, stage: str, steps: int, warmup: int) -> Dict:
    """Time ``warmup + steps`` steps of ``stage`` in this process; keep the last ``steps``."""
    config = load_config(config_path, overrides)
    threads = configure_process(config.threads, config.reuse_freed_memory)
    ctx = DistributedContext(config.device)
    seed_everything(config.seed)
    start = time.perf_counter()
    model, step = _stage_step(config, stage, ctx)
    data = config.data
    dataset, sampler, generator, loader = train_loader(config, ctx, data.crop_size,
                                                       data.batch_size, data.scale_range)
    setup_s = time.perf_counter() - start
    epoch, batches = 0, None
    rng = np.random.default_rng((config.seed, 0, ctx.rank, 7))
    data_s, step_s, values = [], [], []
    for index in range(warmup + steps):
        start = time.perf_counter()
        batch = next(batches, None) if batches is not None else None
        if batch is None:
            set_epoch(epoch, config.seed, dataset, sampler, generator)
            epoch, batches = epoch + 1, iter(loader)
            batch = next(batches)
        images, labels = (t.to(ctx.device, non_blocking=True) for t in batch)
        loaded = time.perf_counter()
        logged = step(model, images, labels, rng)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        if index >= warmup:
            data_s.append(loaded - start)
            step_s.append(time.perf_counter() - loaded)
            values.append(logged)
    images_per_step = len(batch[0])
    total_s = [d + s for d, s in zip(data_s, step_s)]
    return {"images_per_s": images_per_step / statistics.median(total_s),
            "step_only_images_per_s": images_per_step / statistics.median(step_s),
            "data_share": sum(data_s) / sum(total_s),
            "setup_s": setup_s, "threads": threads, "device": str(ctx.device),
            "step_s": step_s, "data_s": data_s, "values": values}


def _in_fresh_process(*args) -> Dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(measure, *args).result()


def compare(config_path: Path, common: List[str], before: List[str], after: List[str],
            stage: str, steps: int, warmup: int, rounds: int) -> Dict:
    """Measure before and after ``rounds`` times, interleaved; the ratio of the best."""
    runs = {"before": [], "after": []}
    for round_index in range(rounds):
        for name, extra in (("before", before), ("after", after)):
            result = _in_fresh_process(config_path, parse_overrides(common + extra), stage, steps,
                                       warmup)
            runs[name].append(result)
            print(f"[{stage}] round {round_index + 1}/{rounds} {name:6s}: "
                  f"{result['images_per_s']:.2f} images/s (step alone "
                  f"{result['step_only_images_per_s']:.2f}, data {result['data_share']:.1%}, "
                  f"set-up {result['setup_s']:.1f} s)", flush=True)
    rates = {name: [r["images_per_s"] for r in results] for name, results in runs.items()}
    best = {name: max(values) for name, values in rates.items()}
    median = {name: statistics.median(values) for name, values in rates.items()}
    identical = all(a["values"] == b["values"] for a, b in zip(runs["before"], runs["after"]))
    return {"before_images_per_s": best["before"], "after_images_per_s": best["after"],
            "ratio": best["after"] / best["before"],
            "ratio_of_medians": median["after"] / median["before"],
            "identical_values": identical, "runs": runs}


def main(argv=None) -> None:
    parser = command_parser(
        "python -m training.throughput", __doc__,
        "the figures to stdout; with --out, a JSON file with every measurement.")
    add_config_arguments(parser, "override config keys for both settings, e.g. "
                                 "data.batch_size=8")
    parser.add_argument("--stages", nargs="+", choices=MEASURED_STAGES, default=["ce"],
                        help="the stages whose step is timed (default: ce)")
    parser.add_argument("--before", nargs="*", default=BEFORE, metavar="KEY=VALUE",
                        help=f"overrides of the 'before' setting (default: {' '.join(BEFORE)})")
    parser.add_argument("--after", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides of the 'after' setting (default: none, the config)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps first (allocator, oneDNN primitives)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measurements of each setting, interleaved")
    parser.add_argument("--out", type=Path, help="JSON file for the figures and every run")
    args = parser.parse_args(argv)
    for name in ("before", "after"):  # a bad config or override ends here, naming the key
        try:
            load_config(args.config, parse_overrides(args.set + getattr(args, name)))
        except (ValueError, FileNotFoundError) as err:
            parser.error(f"--{name}: {err}")
    if min(args.steps, args.rounds) < 1 or args.warmup < 0:
        parser.error("--steps and --rounds must be at least 1, --warmup at least 0")
    report = {"command": " ".join(["python -m training.throughput", *sys.argv[1:]]),
              "before": args.before, "after": args.after, "stages": {}}
    for stage in args.stages:
        result = compare(args.config, args.set, args.before, args.after, stage, args.steps,
                         args.warmup, args.rounds)
        report["stages"][stage] = result
        print(f"[{stage}] before {result['before_images_per_s']:.2f} images/s, after "
              f"{result['after_images_per_s']:.2f} images/s (best of each): "
              f"x{result['ratio']:.2f} (medians: x{result['ratio_of_medians']:.2f}); logged "
              f"values {'identical' if result['identical_values'] else 'differ'}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
