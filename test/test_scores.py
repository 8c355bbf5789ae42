"""Anomaly scores against float64 numpy references, and their defining properties."""

import math

import numpy as np
import pytest
import torch

from dense_ood_ros import scores


def _softmax64(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _jsd64(p):
    c = p.shape[1]
    u = np.full_like(p, 1.0 / c)
    m = 0.5 * (p + u)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_pm = np.where(p > 0, p * np.log(p / m), 0.0).sum(axis=1)
    kl_um = (u * np.log(u / m)).sum(axis=1)
    return 0.5 * (kl_pm + kl_um)


REFERENCES = {
    "jsd": lambda z: 1.0 - _jsd64(_softmax64(z)) / _jsd64(
        np.eye(z.shape[1])[None, :, 0, None, None] * np.ones((1, 1, 1, 1)))[0, 0, 0],
    "msp": lambda z: 1.0 - _softmax64(z).max(axis=1),
    "maxlogit": lambda z: -z.max(axis=1),
    "entropy": lambda z: -(_softmax64(z) * np.log(np.clip(_softmax64(z), 1e-300,
                                                          None))).sum(axis=1),
}


@pytest.mark.parametrize("name", sorted(scores.SCORES))
@pytest.mark.parametrize("scale", [0.1, 3.0, 30.0])
def test_scores_match_float64_reference(name, scale):
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, scale, size=(2, 11, 5, 7))
    got = scores.get_score(name)(torch.from_numpy(logits.astype(np.float32))).numpy()
    want = REFERENCES[name](logits)
    assert got.shape == (2, 5, 7)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("name", sorted(scores.SCORES))
def test_scores_finite_for_extreme_logits(name):
    logits = torch.tensor([[[[1e4]], [[-1e4]], [[0.0]]]])
    assert torch.isfinite(scores.get_score(name)(logits)).all()


def test_jsd_is_zero_for_uniform_and_maximal_for_one_hot():
    c = 11
    uniform = torch.zeros(1, c, 1, 1)
    one_hot = torch.full((1, c, 1, 1), -1e4)
    one_hot[0, 3] = 1e4
    assert scores.jsd_to_uniform(uniform).item() == pytest.approx(0.0, abs=1e-7)
    assert scores.jsd_to_uniform(one_hot).item() == pytest.approx(scores.max_jsd_to_uniform(c),
                                                                  rel=1e-6)
    assert scores.jsd(uniform).item() == pytest.approx(1.0, abs=1e-6)
    assert scores.jsd(one_hot).item() == pytest.approx(0.0, abs=1e-6)
    assert scores.max_jsd_to_uniform(2) < math.log(2)


def test_jsd_gradients_finite_even_when_saturated():
    logits = torch.tensor([[[[50.0]], [[-50.0]], [[0.0]]]], requires_grad=True)
    scores.jsd_to_uniform(logits).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_unknown_score_is_named():
    with pytest.raises(ValueError, match="'bogus'"):
        scores.get_score("bogus")
