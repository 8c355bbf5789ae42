"""NFlowJS training pieces and tiny end-to-end runs on real CamVid frames."""

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dense_ood_ros.checkpoint import load_model
from dense_ood_ros.models import build_model
from dense_ood_ros.scores import jsd_to_uniform, max_jsd_to_uniform
from training.common import CsvLog
from training.config import load_config, parse_overrides
from training.data.dataset import SegmentationDataset, photometric_jitter
from training.data.description import load_description
from training.losses import inlier_cross_entropy, negative_jsd_loss
from training.pasting import (crop_patches, paste_patches, sample_flow_size, sample_locations,
                              sample_patch_size)
from training.plots import main as plots_main, plot_flow_samples
from training.flows import flow_from_config

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "data" / "camvid"
CONFIG = REPO / "training" / "configs" / "camvid_nflowjs.yaml"
needs_camvid = pytest.mark.skipif(not CAMVID.is_dir(), reason=f"CamVid not found at {CAMVID}")

TINY = ["threads=1", f"data.root={CAMVID}", "data.limit_train=4", "data.limit_eval=2",
        "data.batch_size=2", "data.crop_size=[64,96]", "ce.epochs=1", "ce.eval_every=1",
        "flow.pretrain_steps=3", "flow.batch_size=4", "flow.patch_size=16", "nflowjs.epochs=1",
        "model.pretrained=false"]


def test_negative_jsd_loss_properties():
    uniform = torch.zeros(1, 11, 4, 4, requires_grad=True)
    confident = torch.full((1, 11, 4, 4), -20.0)
    confident[:, 2] = 20.0
    negative = torch.zeros(1, 4, 4, dtype=torch.bool)
    negative[:, 1:3, 1:3] = True
    assert negative_jsd_loss(uniform, negative).item() == pytest.approx(0.0, abs=1e-7)
    assert (negative_jsd_loss(confident, negative).item()
            == pytest.approx(max_jsd_to_uniform(11), rel=1e-5))
    logits = torch.randn(2, 11, 4, 4, requires_grad=True)
    negative_jsd_loss(logits, negative.expand(2, 4, 4)).backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[:, :, 0, 0].abs().max() == 0  # no gradient outside the negatives
    assert negative_jsd_loss(logits, torch.zeros(2, 4, 4, dtype=torch.bool)).item() == 0.0


def test_jsd_loss_descent_moves_prediction_to_uniform():
    torch.manual_seed(0)
    logits = torch.randn(1, 11, 1, 1).mul(2).requires_grad_(True)
    start = jsd_to_uniform(logits).item()
    optimizer = torch.optim.SGD([logits], lr=5.0)
    for _ in range(300):
        optimizer.zero_grad()
        jsd_to_uniform(logits).sum().backward()
        optimizer.step()
    assert jsd_to_uniform(logits).item() < 0.01 * start
    assert logits.softmax(1).max().item() < 1.0 / 11 + 0.01


def test_patch_sizes_follow_the_paper_scaled_to_the_crop():
    rng = np.random.default_rng(0)
    sizes = [sample_patch_size(rng, (288, 384), (16, 216), 8, 768, 8) for _ in range(500)]
    heights, widths = zip(*sizes)
    assert all(h % 8 == 0 and w % 8 == 0 for h, w in sizes)
    assert min(heights) == 8 and max(heights) == 80  # 16..216 px * 288/768, rounded to 8
    assert len(set(sizes)) > 30 and any(h != w for h, w in sizes)  # rectangles too


def test_flow_sample_sizes_are_the_patch_scaled_down():
    rng = np.random.default_rng(0)
    assert sample_flow_size(rng, (80, 24), [1], 8) == (80, 24)
    assert sample_flow_size(rng, (96, 24), [4], 8) == (24, 8)  # 6 -> at least 8
    assert sample_flow_size(rng, (8, 8), [4], 8) == (8, 8)
    sizes = {sample_flow_size(rng, (80, 48), [1, 2, 4], 8) for _ in range(100)}
    assert sizes == {(80, 48), (40, 24), (16, 16)}
    state = rng.bit_generator.state
    sample_flow_size(rng, (80, 48), [2], 8)
    # one scale draws nothing: runs without the option reproduce
    assert rng.bit_generator.state == state


def test_pasting_keeps_labels_consistent():
    rng = np.random.default_rng(1)
    images = torch.rand(3, 3, 32, 48) * 255
    labels = torch.randint(0, 11, (3, 32, 48))
    patches = torch.rand(3, 3, 8, 16, requires_grad=True)
    locations = sample_locations(rng, 3, (32, 48), (8, 16))
    replaced = crop_patches(images, locations, (8, 16))
    pasted, new_labels, negative = paste_patches(images, labels, patches * 255, locations,
                                                 ignore_index=11)
    assert int(negative.sum()) == 3 * 8 * 16
    assert (new_labels[negative] == 11).all()
    assert torch.equal(new_labels[~negative], labels[~negative])
    assert torch.equal(pasted.detach()[~negative.unsqueeze(1).expand_as(pasted)],
                       images[~negative.unsqueeze(1).expand_as(images)])
    assert torch.allclose(crop_patches(pasted, locations, (8, 16)), patches * 255)
    assert torch.equal(replaced, crop_patches(images, locations, (8, 16)))
    pasted.sum().backward()
    assert torch.allclose(patches.grad, torch.full_like(patches, 255.0))
    ce = inlier_cross_entropy(torch.randn(3, 11, 32, 48), new_labels, 11)
    assert torch.isfinite(ce)


def test_overrides_parse_as_yaml_and_reject_items_without_a_key():
    assert parse_overrides(["ce.epochs=1", "stages=[ce, flow]",
                            "nflowjs.init_flow=runs/a=b/flow.pt"]) == {
        "ce.epochs": 1, "stages": ["ce", "flow"], "nflowjs.init_flow": "runs/a=b/flow.pt"}
    for bad in ("ce.epochs", "=1"):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            parse_overrides([bad])


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="nflowjs.jsd_wieght"):
        load_config(CONFIG, {"nflowjs.jsd_wieght": 0.1})
    with pytest.raises(ValueError, match="ce.epochs"):
        load_config(CONFIG, {"ce.epochs": "many"})
    with pytest.raises(ValueError, match="stages"):
        load_config(CONFIG, {"stages": ["ce", "gan"]})
    for key, bad in (("data.scale_range", [1.25, 0.75]), ("flow.scale_range", [0, 1])):
        with pytest.raises(ValueError, match=key):
            load_config(CONFIG, {key: bad})
    for bad in ([], [0, 2], 2, [1.5]):
        with pytest.raises(ValueError, match="nflowjs.sample_scales"):
            load_config(CONFIG, {"nflowjs.sample_scales": bad})
    for bad in (-0.1, 1.0, 3):
        with pytest.raises(ValueError, match="data.photometric"):
            load_config(CONFIG, {"data.photometric": bad})


@needs_camvid
def test_photometric_jitter_changes_colours_only_and_only_when_asked():
    description = load_description("camvid")
    options = dict(crop_size=(288, 384), scale_range=(0.75, 1.5), limit=3, seed=5)
    plain = SegmentationDataset(description, CAMVID, "train", **options)
    jittered = SegmentationDataset(description, CAMVID, "train", photometric=0.3, **options)
    default = SegmentationDataset(description, CAMVID, "train", photometric=0.0, **options)
    for index in range(3):
        (image, label), (jimage, jlabel) = plain[index], jittered[index]
        assert torch.equal(label, jlabel)  # same scale, crop and flip
        assert torch.equal(default[index][0], image)  # strength 0: the augmentation as before
        assert not torch.equal(jimage, image) and jimage.dtype == torch.uint8
        # brightness and contrast factors within [0.7, 1.3]: mean luma stays within them
        luma = np.array([0.299, 0.587, 0.114])
        ratio = (jimage.double().numpy() @ luma).mean() / (image.double().numpy() @ luma).mean()
        assert 0.7 * 0.7 < ratio < 1.3 * 1.3
        assert torch.equal(jittered[index][0], jimage)  # drawn from (seed, epoch, index)
    rng = np.random.default_rng(0)
    grey = np.full((8, 8, 3), 100, np.uint8)
    out = photometric_jitter(grey, 0.5, rng)  # a grey image stays grey
    assert (out == out[0, 0, 0]).all()


def _train(tmp_path, *overrides, torchrun=False, **popen):
    module = (["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(29500 + os.getpid() % 1000), "-m", "training.train"] if torchrun
              else ["-m", "training.train"])
    cmd = [sys.executable, *module, "--config", str(CONFIG), "--set", f"output_dir={tmp_path}",
           *TINY, *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def test_flow_samples_plot_measures_clipped_pixels(tmp_path):
    class HalfBlackFlow:
        def sample(self, count, height, width, temperature, generator):
            samples = torch.full((count, 3, height, width), 0.5)
            samples[:, :, : height // 2] = 0.0
            return samples

    assert plot_flow_samples(HalfBlackFlow(), tmp_path / "s.png", seed=0, patch_size=(8, 8),
                             count=2) == [0.5, 0.5]
    # a row at 1/2 size is upsampled bilinearly: the black/grey edge blurs, fewer pixels stay black
    clipped = plot_flow_samples(HalfBlackFlow(), tmp_path / "s.png", seed=0, patch_size=(8, 8),
                                count=2, scales=[1, 2])
    assert clipped[:2] == [0.5, 0.5] and 0.0 < clipped[2] < 0.5


def test_flow_samples_cli_on_a_saved_flow(tmp_path, capsys):
    flow = flow_from_config(load_config(CONFIG))
    torch.save({"flow": flow.state_dict()}, tmp_path / "flow.pt")
    plots_main(["--config", str(CONFIG), "--flow", str(tmp_path / "flow.pt"),
                "--out", str(tmp_path / "s.png")])
    assert (tmp_path / "s.png").stat().st_size > 0
    assert "clipped pixels:" in capsys.readouterr().out
    torch.save({"model": {}}, tmp_path / "model.pt")
    with pytest.raises(SystemExit):
        plots_main(["--config", str(CONFIG), "--flow", str(tmp_path / "model.pt"),
                    "--out", str(tmp_path / "x.png")])
    assert "is not a saved flow" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        plots_main(["--config", str(CONFIG), "--flow", str(tmp_path / "absent.pt"),
                    "--out", str(tmp_path / "x.png")])
    assert "absent.pt not found" in capsys.readouterr().err
    wider = flow_from_config(load_config(CONFIG, {"flow.hidden": 16}))
    torch.save({"flow": wider.state_dict()}, tmp_path / "wider.pt")
    with pytest.raises(SystemExit):
        plots_main(["--config", str(CONFIG), "--flow", str(tmp_path / "wider.pt"),
                    "--out", str(tmp_path / "x.png")])
    assert "does not match the flow the config describes" in capsys.readouterr().err
    plots_main(["--config", str(CONFIG), "--set", "flow.hidden=16",
                "--flow", str(tmp_path / "wider.pt"), "--out", str(tmp_path / "w.png")])
    assert (tmp_path / "w.png").stat().st_size > 0


def test_csv_log_resumed_with_new_columns_keeps_its_header(tmp_path):
    path = tmp_path / "log.csv"
    CsvLog(path, ["step", "loss"]).write(step=1, loss=0.5)
    CsvLog(path, ["step", "loss", "added"]).write(step=2, loss=0.4, added=7)
    with open(path, newline="") as stream:
        assert list(csv.reader(stream)) == [["step", "loss"], ["1", "0.5"], ["2", "0.4"]]


def test_csv_log_resumed_drops_the_rows_written_after_the_last_saved_state(tmp_path):
    path = tmp_path / "log.csv"
    first = CsvLog(path, ["epoch", "step", "loss", "val"])
    for epoch, step in ((1, 1), (1, 2), (2, 3)):  # stopped during epoch 2, state after 1
        first.write(epoch=epoch, step=step, loss=0.5)
    first.write(epoch=1, val=70.1)
    first.write(epoch="", val="not an epoch")
    CsvLog(path, ["epoch", "step", "loss", "val"], resumed_at=("epoch", 1)).write(
        epoch=2, step=3, loss=0.4)
    with open(path, newline="") as stream:
        assert list(csv.reader(stream))[1:] == [
            ["1", "1", "0.5", ""], ["1", "2", "0.5", ""], ["1", "", "", "70.1"],
            ["", "", "", "not an epoch"], ["2", "3", "0.4", ""]]
    CsvLog(path, ["step"], resumed_at=("step", 1))  # the flow's log: by step
    with open(path, newline="") as stream:
        assert [row[1] for row in csv.reader(stream)] == ["step", "1", "", ""]


@needs_camvid
@pytest.mark.slow
def test_all_stages_end_to_end_on_camvid_frames(tmp_path):
    proc = _train(tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    for stage in ("ce", "nflowjs"):
        model, info = load_model(tmp_path / stage / "model.pt")
        assert info["meta"]["stage"] == stage and 0 <= info["meta"]["test_miou"] <= 100
        assert (tmp_path / stage / "losses.png").is_file()
    assert (tmp_path / "flow" / "samples.png").is_file()
    with open(tmp_path / "nflowjs" / "log.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0])[2:6] == ["ce_loss", "jsd_loss", "bpd", "clipped"]
    assert all(0.0 <= float(row["clipped"]) <= 1.0 for row in rows if row["step"])
    # a second run finds every stage finished and trains nothing
    proc = _train(tmp_path)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.count("finished already") == 3, out


@needs_camvid
@pytest.mark.slow
def test_nflowjs_with_coarse_flow_samples(tmp_path):
    """sample_scales: the flow samples at half size, upsampled.

    Its likelihood sees the patch downsampled.
    """
    proc = _train(tmp_path, "nflowjs.sample_scales=[2]", "data.crop_size=[128,128]",
                  "nflowjs.reference_crop=256")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    with open(tmp_path / "nflowjs" / "log.csv", newline="") as stream:
        rows = [row for row in csv.DictReader(stream) if row["step"]]
    assert rows and all(np.isfinite(float(row["bpd"])) and np.isfinite(float(row["jsd_loss"]))
                        for row in rows)
    load_model(tmp_path / "nflowjs" / "model.pt")


@needs_camvid
@pytest.mark.slow
def test_ce_starts_from_a_trained_checkpoint_of_the_same_model(tmp_path):
    proc = _train(tmp_path / "base", "stages=[ce]")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    base = tmp_path / "base" / "ce" / "model.pt"
    # no epochs: the stage writes the weights it started from
    proc = _train(tmp_path / "again", "stages=[ce]", "ce.epochs=0", f"ce.init_model={base}")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    (before, _), (after, info) = load_model(base), load_model(tmp_path / "again/ce/model.pt")
    assert info["meta"]["init_model"] == str(base)
    weights = zip(before.state_dict().values(), after.state_dict().values())
    assert all(torch.equal(a, b) for a, b in weights)
    proc = _train(tmp_path / "other", "stages=[ce]", f"ce.init_model={base}",
                  "model.name=efficientnet_lite0_swiftnet_separable")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "ce.init_model" in out and "model.name" in out, out
    proc = _train(tmp_path / "missing", "stages=[ce]", f"ce.init_model={tmp_path}/none.pt")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0 and f"'ce.init_model': no checkpoint at {tmp_path}" in out, out


@needs_camvid
def test_flow_pretraining_is_deterministic_and_follows_its_scale_range(tmp_path):
    runs = []
    for name, scales in (("a", "[0.75,1.25]"), ("b", "[0.75,1.25]"), ("coarse", "[0.25,0.25]")):
        proc = _train(tmp_path / name, "stages=[flow]", f"flow.scale_range={scales}")
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        runs.append(torch.load(tmp_path / name / "flow" / "flow.pt", weights_only=True)["flow"])
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


@needs_camvid
@pytest.mark.slow
def test_interrupted_stage_resumes(tmp_path):
    proc = _train(tmp_path, "stages=[ce]", "ce.epochs=4", "ce.eval_every=10")
    state = tmp_path / "ce" / "last.pt"
    deadline = time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.communicate()
    assert state.exists() and not (tmp_path / "ce" / "model.pt").exists()
    proc = _train(tmp_path, "stages=[ce]", "ce.epochs=4", "ce.eval_every=10")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "[ce] resuming after epoch" in out
    assert (tmp_path / "ce" / "model.pt").is_file()
    with open(tmp_path / "ce" / "log.csv", newline="") as stream:
        steps = [int(row["step"]) for row in csv.DictReader(stream) if row["step"]]
    assert steps == list(range(1, len(steps) + 1))  # each step logged once


@needs_camvid
@pytest.mark.slow
def test_two_process_distributed_training_with_gloo(tmp_path):
    """torchrun, 2 CPU processes, gloo: every stage runs under DistributedDataParallel."""
    proc = _train(tmp_path, "data.batch_size=4", torchrun=True)
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    assert (tmp_path / "nflowjs" / "model.pt").is_file()
    load_model(tmp_path / "nflowjs" / "model.pt")


@needs_camvid
def test_frozen_encoder_bn_and_weight_ema(tmp_path):
    """Check ``frozen_encoder_bn`` and ``ema_decay``.

    ``frozen_encoder_bn`` keeps the encoder's statistics as loaded; ``ema_decay`` saves the
    average, which differs from the last weights of the same run without it.
    """
    runs = {}
    for name, overrides in (("plain", []), ("frozen", ["ce.frozen_encoder_bn=true"]),
                            ("ema", ["ce.ema_decay=0.5"])):
        proc = _train(tmp_path / name, "stages=[ce]", "ce.epochs=2", *overrides)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        runs[name] = load_model(tmp_path / name / "ce" / "model.pt")[0].state_dict()
    initial = build_model("efficientnet_lite0_swiftnet", 12, pretrained=False).state_dict()
    encoder_stats = [k for k in initial if k.startswith("encoder.") and "running_" in k]
    decoder_stats = [k for k in initial if k.startswith("decoder.") and "running_" in k]
    assert encoder_stats and decoder_stats
    assert all(torch.equal(runs["frozen"][k], initial[k]) for k in encoder_stats)
    assert not all(torch.equal(runs["frozen"][k], initial[k]) for k in decoder_stats)
    assert not all(torch.equal(runs["plain"][k], initial[k]) for k in encoder_stats)
    assert not all(torch.equal(runs["ema"][k], runs["plain"][k]) for k in runs["plain"])
    state = torch.load(tmp_path / "ema" / "ce" / "last.pt", weights_only=True)
    assert int(state["modules"]["ema"]["n_averaged"]) == 4  # 2 epochs of 2 steps
    with pytest.raises(ValueError, match="nflowjs.ema_decay"):
        load_config(CONFIG, parse_overrides(["nflowjs.ema_decay=1.0"]))
