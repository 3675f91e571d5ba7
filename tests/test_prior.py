"""FlowPrior: the published configuration, log-likelihood on magnitudes, sampling, files, bad input."""
import math

import pytest
import torch

import flowsep
from flowsep import FlowPrior, FlowsepError, PriorConfig
from flowsep.flows import standard_normal_logpdf


def _prior(profile="smoke", **kw):
    torch.manual_seed(0)
    p = FlowPrior(PriorConfig.preset(profile, **kw))
    p.train()
    with torch.no_grad():  # data-dependent init, then move couplings off the identity
        p(torch.rand(2, p.channels, 16))
        for m in p.modules():
            if isinstance(m, flowsep.flows.AffineCoupling):
                torch.nn.init.normal_(m.end.weight, std=0.05)
    return p.eval()


def test_paper_profile_is_the_published_model():
    c = PriorConfig.preset("paper")
    assert (c.sample_rate, c.n_fft, c.hop, c.transform) == (22050, 1024, 256, "linear")
    assert (c.n_blocks, c.hidden, c.kernel, c.dilation_rate, c.n_layers, c.dropout) == (12, 128, 5, 1, 4, 0.05)
    assert (c.n_split, c.n_sqz, c.lr, c.lr_decay, c.lr_decay_every, c.batch_size, c.grad_clip) == \
        (4, 2, 1e-4, 0.3, 80_000, 32, 4.0)
    p = FlowPrior(c)
    assert p.channels == 514 and p.bins == 513 and p.frame_multiple == 2


@pytest.mark.parametrize("transform", ["linear", "log"])
def test_log_prob_equals_direct_computation(transform):
    p = _prior(transform=transform, scale=0.5)
    mag = torch.rand(3, p.bins, 16) * 2
    c = p.config
    if transform == "linear":
        x = mag * c.scale
        ld_t = mag.numel() / 3 * math.log(c.scale)
    else:
        y = torch.log(mag + c.log_eps)
        x = y * c.scale
        ld_t = mag[0].numel() * math.log(c.scale) - y.flatten(1).sum(1)
    x = torch.cat([x, torch.zeros(3, p.channels - p.bins, 16)], 1)
    z, ld = p(x)
    direct = (-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)).sum((1, 2)) + ld + ld_t
    assert torch.allclose(p.log_prob(mag), direct, rtol=1e-5, atol=1e-3)
    bpd = p.bits_per_dim(mag)
    assert torch.allclose(bpd, -direct / (p.bins * 16 * math.log(2)), rtol=1e-5, atol=1e-5)


def test_log_transform_jacobian_matches_autograd():
    p = _prior(transform="log", scale=0.7).double()
    mag = torch.rand(1, p.bins, 4, dtype=torch.float64) + 0.1
    jac = torch.autograd.functional.jacobian(lambda m: p.encode(m.view_as(mag))[0][:, :p.bins].flatten(),
                                             mag.flatten())
    assert torch.allclose(p.encode(mag)[1], torch.linalg.slogdet(jac)[1], rtol=1e-9)


def test_sample_shapes_and_nonnegative():
    p = _prior()
    s = p.sample(3, 20, temperature=0.7, generator=torch.Generator().manual_seed(0))
    assert s.shape == (3, p.bins, 20) and (s >= 0).all() and torch.isfinite(s).all()


def test_save_load_keeps_log_prob(tmp_path):
    p = _prior()
    mag = torch.rand(2, p.bins, 16)
    p.save(tmp_path / "p.pt")
    q = FlowPrior.load(tmp_path / "p.pt")
    assert q.config == p.config
    assert torch.equal(q.log_prob(mag), p.log_prob(mag))
    ckpt = torch.load(tmp_path / "p.pt", weights_only=True)
    assert ckpt["flowsep_version"] == flowsep.__version__ and ckpt["config"]["profile"] == "smoke"


def test_standard_normal_logpdf():
    z = torch.zeros(2, 3, 4)
    assert torch.allclose(standard_normal_logpdf(z), torch.full((2,), -6 * math.log(2 * math.pi)))


@pytest.mark.parametrize("bad, message", [
    (lambda p: p.log_prob(torch.rand(2, p.bins, 16)[0]), "shape"),
    (lambda p: p.log_prob(torch.rand(2, p.bins + 3, 16)), "channels"),
    (lambda p: p.log_prob(torch.rand(2, p.bins, 15)), "multiple of 2"),
    (lambda p: p.log_prob(torch.full((1, p.bins, 16), float("nan"))), "NaN"),
    (lambda p: p.log_prob(torch.full((1, p.bins, 16), float("inf"))), "NaN or Inf"),
    (lambda p: p(torch.rand(1, p.channels - 1, 16)), "channels"),
    (lambda p: p.inverse(torch.rand(1, 3, 8)), "latent"),
    (lambda p: p.sample(1, 7), "multiple"),
])
def test_bad_inputs_have_clear_messages(bad, message):
    p = _prior()
    with pytest.raises(FlowsepError, match=message) as e:
        bad(p)
    assert "\n" not in str(e.value)


def test_unknown_profile():
    with pytest.raises(FlowsepError, match="unknown profile 'huge'.*smoke, cpu, gpu, paper"):
        PriorConfig.preset("huge")


def test_corrupt_and_incompatible_checkpoints(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(FlowsepError, match=f"{bad}.*corrupt"):
        FlowPrior.load(bad)
    p = _prior()
    good = tmp_path / "good.pt"
    p.save(good)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(FlowsepError, match="trunc.pt.*corrupt"):
        FlowPrior.load(trunc)
    ckpt = p.checkpoint()
    ckpt["format_version"] = 99
    future = tmp_path / "future.pt"
    torch.save(ckpt, future)
    with pytest.raises(FlowsepError, match="future.pt has checkpoint format 99"):
        FlowPrior.load(future)
    ckpt = p.checkpoint()
    ckpt["config"]["wings"] = 2
    torch.save(ckpt, tmp_path / "odd.pt")
    with pytest.raises(FlowsepError, match="odd.pt has settings.*wings"):
        FlowPrior.load(tmp_path / "odd.pt")
    with pytest.raises(FlowsepError, match="not found"):
        FlowPrior.load(tmp_path / "missing.pt")


def test_noise_conditioned_prior_levels_checkpoint_and_errors(tmp_path):
    cfg = PriorConfig.preset("smoke", noise_levels=5, noise_max=2.0, noise_min=0.02)
    p = FlowPrior(cfg).eval()
    assert p.noise_conditioned and not _prior().noise_conditioned
    s = p.noise_sigmas
    assert s.shape == (5,) and abs(s[0] - 2.0) < 1e-6 and abs(s[-1] - 0.02) < 1e-7
    assert torch.allclose(s[:-1] / s[1:], (s[0] / s[1]).expand(4))  # geometric, largest first
    mag = torch.rand(2, p.bins, 16)
    x, ld_t = p.encode(mag)
    assert torch.allclose(p.log_prob(mag), p.flow_log_prob(x, 0.02) + ld_t)  # the density at the smallest level
    p.save(tmp_path / "n.pt")
    q = FlowPrior.load(tmp_path / "n.pt")
    assert q.config == cfg and torch.equal(q.flow_log_prob(x, 0.5), p.flow_log_prob(x, 0.5))
    with pytest.raises(FlowsepError, match="not noise-conditioned"):
        _prior()(x, 0.5)
    with pytest.raises(FlowsepError, match="noise_min"):
        FlowPrior(PriorConfig.preset("smoke", noise_levels=3, noise_min=0.0))
