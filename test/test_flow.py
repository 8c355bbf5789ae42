"""The normalizing flow: invertibility, exact log-likelihood, sampling at several sizes."""

import math

import pytest
import torch

from training.flows.glow import Glow, squeeze, unsqueeze


def _perturbed_flow(levels=2, steps=2, hidden=16):
    torch.manual_seed(0)
    flow = Glow(num_levels=levels, steps_per_level=steps, hidden=hidden).double()
    flow(torch.rand(4, 3, 8, 8, dtype=torch.float64))  # data-dependent actnorm init
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))  # make couplings non-trivial
    return flow


def test_squeeze_round_trip():
    x = torch.randn(2, 3, 8, 12)
    assert torch.equal(unsqueeze(squeeze(x)), x)


def test_round_trip_x_to_z_to_x():
    flow = _perturbed_flow()
    x = torch.rand(3, 3, 16, 24, dtype=torch.float64)
    latents, _ = flow(x)
    assert torch.allclose(flow.inverse(latents), x, atol=1e-10)


def test_log_det_matches_brute_force_jacobian():
    flow = _perturbed_flow()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    flat = lambda v: torch.cat([z.flatten() for z in flow(v.view(1, 3, 8, 8))[0]])  # noqa: E731
    jacobian = torch.autograd.functional.jacobian(flat, x.flatten())
    assert flow(x)[1].item() == pytest.approx(torch.linalg.slogdet(jacobian)[1].item(), rel=1e-9)


def test_log_prob_of_identity_flow_is_standard_normal():
    """Check a known case: the identity flow.

    With couplings at zero, actnorm at identity and identity 1x1 convs the flow is a
    (volume-preserving) permutation, so log p(x) is the standard-normal density of x - 0.5.
    """
    flow = Glow(num_levels=2, steps_per_level=1, hidden=8).double()
    with torch.no_grad():
        for module in flow.modules():
            if hasattr(module, "initialized"):
                module.initialized.fill_(True)
            if hasattr(module, "weight") and module.weight.dim() == 2:
                module.weight.copy_(torch.eye(module.weight.shape[0]))
            if module.__class__.__name__ == "AffineCoupling":
                module.net[-1].bias.copy_(
                    torch.tensor([0.0, 50.0]).repeat(module.net[-1].bias.numel() // 2))
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    want = (-0.5 * ((x - 0.5) ** 2 + math.log(2 * math.pi))).flatten(1).sum(1)
    assert torch.allclose(flow.log_prob(x), want, atol=1e-8)


@pytest.mark.parametrize("size", [(8, 8), (16, 40), (80, 64)])
def test_samples_have_requested_size_and_range(size):
    flow = Glow()
    samples = flow.sample(2, *size)
    assert samples.shape == (2, 3, *size)
    assert samples.min() >= 0 and samples.max() <= 1


def test_sampling_is_differentiable():
    flow = Glow(num_levels=2, steps_per_level=1, hidden=8)
    flow(torch.rand(2, 3, 8, 8))
    flow.sample(2, 16, 16, temperature=0.5).mean().backward()
    grads = [p.grad for p in flow.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_bad_patch_size_is_named():
    with pytest.raises(ValueError, match="12x16"):
        Glow().sample(1, 12, 16)


def test_bits_per_dim_decreases_with_training():
    torch.manual_seed(0)
    flow = Glow(num_levels=2, steps_per_level=2, hidden=16)
    # smooth images (a ramp per image plus a little noise): spatially correlated, like patches
    ramp = torch.linspace(0, 1, 8)
    images = (60 + 120 * torch.rand(8, 3, 1, 1)
              * (ramp[None, None, :, None] + ramp[None, None, None, :]) / 2
              + torch.randint(0, 4, (8, 3, 8, 8))).floor()
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        bpd = flow.bits_per_dim(images)
        first = first if first is not None else bpd.item()
        optimizer.zero_grad()
        bpd.backward()
        optimizer.step()
    assert bpd.item() < first - 1.0
    assert bpd.item() > 0


def test_sampling_stays_finite_when_couplings_shrink_hard():
    """Couplings with vanishing scales must not make the inverse overflow (NaN patches)."""
    flow = Glow()
    with torch.no_grad():
        for module in flow.modules():
            if module.__class__.__name__ == "AffineCoupling":
                module.net[-1].bias.copy_(
                    torch.tensor([0.0, -60.0]).repeat(module.net[-1].bias.numel() // 2))
    torch.manual_seed(0)
    assert torch.isfinite(flow.sample(4, 64, 72, temperature=1.0)).all()
