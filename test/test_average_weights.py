"""Weight averaging of model files (training.average_weights)."""

import subprocess
import sys

import torch

from dense_ood_ros.checkpoint import read_checkpoint, save_checkpoint
from dense_ood_ros.label_set import description_label_set
from dense_ood_ros.models import build_model
from training.average_weights import average


def _model_file(path, seed, name="efficientnet_lite0_swiftnet"):
    torch.manual_seed(seed)
    model = build_model(name, 11, pretrained=False)
    for module in model.modules():  # BatchNorm statistics that differ between the files
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
    save_checkpoint(path, model, name, description_label_set("camvid"), (360, 480), {})
    return path


def test_the_average_is_the_mean_of_every_float_tensor(tmp_path):
    a, b = _model_file(tmp_path / "a.pt", 0), _model_file(tmp_path / "b.pt", 1)
    average([a, b], [0.25, 0.75], tmp_path / "soup.pt")
    states = [read_checkpoint(p)["state_dict"] for p in (a, b, tmp_path / "soup.pt")]
    for name, tensor in states[2].items():
        if tensor.is_floating_point():
            assert torch.allclose(tensor, 0.25 * states[0][name] + 0.75 * states[1][name],
                                  atol=1e-6), name
        else:
            assert torch.equal(tensor, states[0][name]), name
    meta = read_checkpoint(tmp_path / "soup.pt")["meta"]
    assert [s["weight"] for s in meta["sources"]] == [0.25, 0.75]


def test_other_architectures_and_bad_weights_are_refused(tmp_path):
    a = _model_file(tmp_path / "a.pt", 0)
    other = _model_file(tmp_path / "o.pt", 0, "efficientnet_lite0_swiftnet_separable")
    command = [sys.executable, "-m", "training.average_weights", "--out", str(tmp_path / "x.pt")]
    result = subprocess.run(command + ["--models", str(a), str(other)], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "cannot be averaged" in result.stderr
    result = subprocess.run(command + ["--models", str(a), str(a), "--weights", "0.7", "0.7"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "summing to 1" in result.stderr
    assert not (tmp_path / "x.pt").exists()


def test_toward_imagenet_moves_the_encoder_only(tmp_path):
    """WiSE-FT: the encoder a fraction of the way back to its ImageNet weights, decoder kept."""
    a = _model_file(tmp_path / "a.pt", 0)
    out = tmp_path / "wise.pt"
    command = [sys.executable, "-m", "training.average_weights", "--models", str(a)]
    result = subprocess.run(command + ["--toward-imagenet", "0.25", "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    before, after = read_checkpoint(a)["state_dict"], read_checkpoint(out)["state_dict"]
    imagenet = build_model("efficientnet_lite0_swiftnet", 11, pretrained=True).state_dict()
    moved = 0
    for name, tensor in after.items():
        if name.startswith("encoder.") and tensor.is_floating_point():
            assert torch.allclose(tensor, 0.75 * before[name] + 0.25 * imagenet[name],
                                  atol=1e-6), name
            moved += not torch.allclose(tensor, before[name])
        else:
            assert torch.equal(tensor, before[name]), name
    assert moved > 100  # the encoder's convolutions and BatchNorms
    assert read_checkpoint(out)["meta"]["toward_imagenet"] == 0.25
    result = subprocess.run(command + ["--toward-imagenet", "1", "--out", str(tmp_path / "x.pt")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--toward-imagenet" in result.stderr
