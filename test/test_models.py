"""Model factory tests; ``ModelContract`` is the shared test class reused per model."""

import numpy as np
import pytest
import torch

from dense_ood_ros.models import MODELS, build_model
from dense_ood_ros.models.encoders.efficientnet_lite import (VARIANTS, EfficientNetLite,
                                                             load_imagenet_weights)
from dense_ood_ros.preprocessing import Normalize


class ModelContract:
    """What every entry of ``MODELS`` must do; subclass and set ``name``."""

    name: str

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls):
        torch.manual_seed(0)
        return build_model(cls.name, num_classes=11, pretrained=False).eval()

    @pytest.mark.parametrize("size", [(64, 96), (90, 120), (360, 480)])
    def test_logits_at_input_resolution(self, model, size):
        with torch.no_grad():
            logits = model(torch.randn(2, 3, *size))
        assert logits.shape == (2, 11, *size)
        assert torch.isfinite(logits).all()

    def test_trains(self, model):
        model = build_model(self.name, num_classes=5, pretrained=False).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 5, (2, 64, 64))
        losses = []
        for _ in range(5):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0]


class TestEfficientNetLite0SwiftNet(ModelContract):
    name = "efficientnet_lite0_swiftnet"


class TestEfficientNetLite0SwiftNetSeparable(ModelContract):
    name = "efficientnet_lite0_swiftnet_separable"


class TestEfficientNetLite2SwiftNet(ModelContract):
    name = "efficientnet_lite2_swiftnet"


def _conv_flops(model: torch.nn.Module, size=(360, 480)) -> int:
    """Multiply-adds of every convolution at ``size``, counted with forward hooks."""
    total = []

    def count(module, inputs, output):
        weight = module.weight
        total.append(output.numel() * weight.shape[1] * weight.shape[2] * weight.shape[3])

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, *size))
    for hook in hooks:
        hook.remove()
    return sum(total)


def test_separable_blends_halve_the_convolution_cost():
    dense = build_model("efficientnet_lite0_swiftnet", 11, pretrained=False).eval()
    separable = build_model("efficientnet_lite0_swiftnet_separable", 11, pretrained=False).eval()
    blends = [m.blend for m in separable.decoder.ladder]
    assert all(any(c.groups == c.in_channels > 1 for c in blend if isinstance(c, torch.nn.Conv2d))
               for blend in blends)
    ratio = _conv_flops(separable) / _conv_flops(dense)
    assert 0.35 < ratio < 0.55, ratio


def test_every_model_has_a_contract_test():
    tested = {cls.name for cls in ModelContract.__subclasses__()}
    assert tested == set(MODELS)


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="'resnet1000'"):
        build_model("resnet1000", 11)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_imagenet_weights_classify_a_real_cat(variant):
    """Load the shipped ImageNet weights for real.

    Chelsea (scikit-image) lands in an ImageNet cat class.
    """
    skimage_data = pytest.importorskip("skimage.data")
    pytest.importorskip(VARIANTS[variant].package)
    import cv2

    encoder = EfficientNetLite(variant)
    load_imagenet_weights(encoder)
    encoder.eval()
    image = cv2.resize(skimage_data.chelsea(), (224, 224), interpolation=cv2.INTER_AREA)
    with torch.no_grad():
        probs = encoder.classify(Normalize()(torch.from_numpy(image[None]))).softmax(1)[0]
    cat_classes = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert int(probs.argmax()) in cat_classes
    assert float(probs[list(cat_classes)].sum()) > 0.5


def test_pretrained_model_differs_from_random_init():
    torch.manual_seed(0)
    random_init = build_model("efficientnet_lite0_swiftnet", 11, pretrained=False)
    pretrained = build_model("efficientnet_lite0_swiftnet", 11, pretrained=True)
    key = "encoder._conv_stem.weight"
    assert not np.allclose(random_init.state_dict()[key], pretrained.state_dict()[key])
