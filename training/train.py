"""Run the training stages of a config: ``python -m training.train --config training/configs/X.yaml``.

Every stage checkpoints each epoch and resumes where it stopped when the command is run
again; a finished stage is skipped. Multi-process: ``torchrun --nproc_per_node N -m training.train``.
"""

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from dense_ood_ros.checkpoint import save_checkpoint
from dense_ood_ros.classes import CAMVID_CLASSES, IGNORE_INDEX
from dense_ood_ros.models import build_model
from dense_ood_ros.preprocessing import Normalize
from training.common import (CsvLog, DistributedContext, Timer, evaluate_segmentation, load_state,
                             save_state, seed_everything, unwrap)
from training.config import TrainConfig, load_config
from training.data.camvid import CamVid
from training.plots import plot_losses


def _param_groups(model, lr: float, encoder_factor: float, weight_decay: float):
    encoder = [p for n, p in model.named_parameters() if n.startswith("encoder.")]
    decoder = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    return [{"params": encoder, "lr": lr * encoder_factor, "weight_decay": weight_decay},
            {"params": decoder, "lr": lr, "weight_decay": weight_decay}]


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def train_ce(config: TrainConfig, ctx: DistributedContext) -> Path:
    """Cross-entropy pre-training; returns the path of the finished model checkpoint."""
    stage_dir = Path(config.output_dir) / "ce"
    stage_dir.mkdir(parents=True, exist_ok=True)
    model_path = stage_dir / "model.pt"
    if model_path.is_file():
        if ctx.is_main:
            print(f"[ce] finished already: {model_path}")
        return model_path
    cfg, data = config.ce, config.data
    seed_everything(config.seed)
    model = build_model(config.model.name, len(CAMVID_CLASSES), pretrained=config.model.pretrained)
    train_set = CamVid(data.root, "train", crop_size=data.crop_size, scale_range=data.scale_range,
                       limit=data.limit_train, seed=config.seed)
    val_set = CamVid(data.root, "val", limit=data.limit_eval)
    sampler = DistributedSampler(train_set, seed=config.seed) if ctx.enabled else None
    generator = torch.Generator().manual_seed(config.seed)
    batch_size = max(1, data.batch_size // ctx.world_size)
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                        num_workers=data.num_workers, drop_last=True, generator=generator)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.lr, cfg.encoder_lr_factor, cfg.weight_decay))
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    total_steps = cfg.epochs * len(loader)

    state_path = stage_dir / "last.pt"
    state = load_state(state_path)
    start_epoch, elapsed = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, elapsed = state["epoch"], state["elapsed_s"]
        if ctx.is_main:
            print(f"[ce] resuming after epoch {start_epoch}/{cfg.epochs} from {state_path}")
    timer = Timer(elapsed)
    ddp_model = ctx.wrap(model)
    normalize = Normalize()
    log = CsvLog(stage_dir / "log.csv", ["epoch", "step", "loss", "lr", "val_miou", "elapsed_s"]) if ctx.is_main else None

    for epoch in range(start_epoch, cfg.epochs):
        train_set.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        generator.manual_seed(config.seed + epoch)
        ddp_model.train()
        bar = tqdm(loader, desc=f"[ce] epoch {epoch + 1}/{cfg.epochs}", disable=not ctx.is_main)
        for i, (images, labels) in enumerate(bar):
            step = epoch * len(loader) + i
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * _cosine(step, total_steps)
            logits = ddp_model(normalize(images))
            loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if log is not None:
                log.write(epoch=epoch + 1, step=step + 1, loss=f"{loss.item():.5f}",
                          lr=f"{optimizer.param_groups[1]['lr']:.3e}", elapsed_s=f"{timer.elapsed:.1f}")
        val_miou = ""
        if ctx.is_main and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            val_miou = f"{evaluate_segmentation(model, val_set, '[ce] val')['miou']:.2f}"
            print(f"[ce] epoch {epoch + 1}: val mIoU {val_miou}")
            log.write(epoch=epoch + 1, val_miou=val_miou, elapsed_s=f"{timer.elapsed:.1f}")
        if ctx.is_main:
            save_state(state_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "epoch": epoch + 1, "elapsed_s": timer.elapsed})
        ctx.barrier()

    if ctx.is_main:
        finish_segmentation_stage(config, unwrap(ddp_model), stage_dir, "ce", timer.elapsed)
    ctx.barrier()
    return model_path


def finish_segmentation_stage(config: TrainConfig, model, stage_dir: Path, stage: str, elapsed_s: float) -> None:
    """Evaluate on val and test, write metrics, the loss plot and the model checkpoint."""
    data = config.data
    results = {split: evaluate_segmentation(model, CamVid(data.root, split, limit=data.limit_eval), f"[{stage}] {split}")
               for split in ("val", "test")}
    (stage_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    plot_losses(stage_dir / "log.csv", stage_dir / "losses.png", title=f"{stage} training")
    meta = {"stage": stage, "train_seconds": round(elapsed_s, 1), "config": json.loads(json.dumps(
        config, default=lambda o: o.__dict__)),
            "val_miou": results["val"]["miou"], "test_miou": results["test"]["miou"]}
    save_checkpoint(stage_dir / "model.pt", model, config.model.name, CAMVID_CLASSES,
                    config.model.input_size, meta)
    print(f"[{stage}] done in {elapsed_s / 60:.1f} min: val mIoU {results['val']['miou']:.2f}, "
          f"test mIoU {results['test']['miou']:.2f} -> {stage_dir / 'model.pt'}")


STAGES = {"ce": train_ce}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML config in training/configs/")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. ce.epochs=1 data.limit_train=8")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
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
