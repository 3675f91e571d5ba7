"""The flow layers: exact inverses and log-determinants checked against brute-force Jacobians."""
import pytest
import torch

from flowsep import FlowPrior, PriorConfig
from flowsep.flows import ActNorm, AffineCoupling, GroupedInvConv, squeeze, unsqueeze


def _randomize(module):
    """Move every zero-initialised layer away from the identity so the checks see a real map."""
    torch.manual_seed(1)
    for m in module.modules():
        if isinstance(m, AffineCoupling):
            torch.nn.init.normal_(m.end.weight, std=0.5 / m.end.in_channels ** 0.5)
            torch.nn.init.normal_(m.end.bias, std=0.1)
        if isinstance(m, ActNorm):
            torch.nn.init.normal_(m.loc, std=0.5)
            torch.nn.init.normal_(m.log_scale, std=0.2)
            m.initialized.fill_(True)
    return module.eval()


def _brute_logdet(fn, x):
    jac = torch.autograd.functional.jacobian(lambda v: fn(v.reshape(x.shape))[0].flatten(), x.flatten())
    return torch.linalg.slogdet(jac)[1]


def test_squeeze_roundtrip_and_layout():
    x = torch.arange(2 * 3 * 8.).reshape(2, 3, 8)
    y = squeeze(x, 2)
    assert y.shape == (2, 6, 4)
    assert torch.equal(y[:, :3], x[:, :, 0::2]) and torch.equal(y[:, 3:], x[:, :, 1::2])
    assert torch.equal(unsqueeze(y, 2), x)


@pytest.mark.parametrize("layer", [lambda: ActNorm(8), lambda: GroupedInvConv(8, 4),
                                   lambda: AffineCoupling(8, 6, 3, 1, 2, 0.0)])
def test_layer_logdet_matches_autograd(layer):
    torch.manual_seed(0)
    m = _randomize(layer().double())
    x = torch.randn(1, 8, 5, dtype=torch.float64)
    y, ld = m(x)
    assert torch.allclose(m.inverse(y), x, atol=1e-12)
    brute = _brute_logdet(m, x)
    assert abs(ld.item() - brute.item()) <= 1e-6 * max(1.0, abs(brute.item()))


def test_prior_logdet_matches_autograd_float64():
    cfg = PriorConfig(n_fft=14, hop=4, n_blocks=3, hidden=8, kernel=3, n_layers=2, dropout=0.0)
    prior = _randomize(FlowPrior(cfg).double())
    x = torch.randn(1, prior.channels, 6, dtype=torch.float64)
    _, ld = prior(x)
    brute = _brute_logdet(prior, x)
    assert abs(ld.item() - brute.item()) <= 1e-6 * abs(brute.item())


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_inverse_of_forward_float32(profile):
    torch.manual_seed(0)
    prior = _randomize(FlowPrior(PriorConfig.preset(profile)))
    x = torch.randn(2, prior.channels, 16)
    with torch.no_grad():
        z, _ = prior(x)
        err = (prior.inverse(z) - x).abs().max().item()
    assert z.shape == (2, prior.channels * 2, 8)
    assert err < 1e-4


def test_actnorm_data_dependent_init():
    m = ActNorm(4).train()
    x = torch.randn(16, 4, 50) * torch.tensor([1., 3., .2, 10.]).view(1, 4, 1) + 5
    y, _ = m(x)
    assert torch.allclose(y.mean((0, 2)), torch.zeros(4), atol=1e-4)
    assert torch.allclose(y.std((0, 2), unbiased=False), torch.ones(4), atol=1e-4)
    y2, _ = m(x * 2)  # initialised once only
    assert not torch.allclose(y2.std((0, 2), unbiased=False), torch.ones(4), atol=1e-2)


def test_coupling_starts_as_identity():
    m = AffineCoupling(8, 6, 3, 1, 2, 0.0)
    x = torch.randn(2, 8, 7)
    y, ld = m(x)
    assert torch.equal(y, x) and torch.equal(ld, torch.zeros(2))


def test_conditioned_flow_is_invertible_for_each_condition_and_its_logdet_exact():
    """A noise-conditioned prior: for a fixed sigma the flow is a bijection whose logdet is exact, and
    another sigma gives another map."""
    cfg = PriorConfig(n_fft=14, hop=4, n_blocks=3, hidden=8, kernel=3, n_layers=2, dropout=0.0, noise_levels=4)
    prior = _randomize(FlowPrior(cfg).double())
    for m in prior.modules():
        if isinstance(m, AffineCoupling):
            torch.nn.init.normal_(m.cond.weight, std=0.5)
    x = torch.randn(1, prior.channels, 6, dtype=torch.float64)
    z, ld = prior(x, 0.3)
    assert torch.allclose(prior.inverse(z, 0.3), x, atol=1e-10)
    brute = _brute_logdet(lambda v: prior(v, 0.3), x)
    assert abs(ld.item() - brute.item()) <= 1e-6 * abs(brute.item())
    z2, _ = prior(x, 1.0)
    assert (z2 - z).abs().max() > 1e-3
    default, _ = prior(x)  # no sigma: the smallest level
    assert torch.equal(default, prior(x, cfg.noise_min)[0])
    with pytest.raises(ValueError, match="conditioned"):
        prior.flow(x)
