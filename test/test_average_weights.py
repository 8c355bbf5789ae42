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
