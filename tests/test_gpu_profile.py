"""The GPU reader's path: the preface says, per chapter, whether its GPU time is measured or estimated."""


def test_preface_gpu_estimates_follow_the_budgets_the_chapters_use(monkeypatch):
    """The preface's GPU column is computed from the settings the chapters read (a prior's budget, chapter
    6's race and its budget curve), so it moves with them."""
    from flowsep import book_build, comparison
    from flowsep.prior import PriorConfig

    prior = PriorConfig.preset("gpu").train_seconds
    race = comparison.RACE_SECONDS["gpu"]
    training = book_build.gpu_training_seconds()
    assert training["04"] == 4 * prior and training["07"] == 3 * prior
    curve = 2 * sum(f * race for f in comparison.CURVE_FRACTIONS["gpu"])
    assert training["06"] == 4 * race + (0 if race / 4 == prior else race) + curve
    before = book_build.gpu_estimates()["06"]
    monkeypatch.setitem(comparison.RACE_SECONDS, "gpu", 2 * race)
    assert book_build.gpu_estimates()["06"] > before   # a longer race: a longer chapter 6


def test_preface_gpu_column_says_measured_or_estimated():
    from flowsep import book_build
    titles = {"01_a": "First", "04_b": "Fourth"}
    cpu = {"profile": "cpu", "machine": "2 CPU cores without a GPU",
           "chapters": {"01_a": {"seconds": 30.0, "status": "ok"}, "04_b": {"seconds": 300.0, "status": "ok"}}}
    md = book_build.timings_markdown(cpu, titles)
    assert md.count("estimated (training budgets + FLOP count, no GPU measurement yet)") == 2
    assert "measured" not in md.replace("no GPU measurement", "")
    gpu = dict(cpu, profile="gpu", machine="2 CPU cores with a Tesla T4 GPU")
    md = book_build.timings_markdown(gpu, titles)
    assert "| Fourth | 5.0 min | not recorded | 5.0 min measured (this build) |" in md and "estimated" not in md


# ---- what the gpu profile runs on CUDA, simulated on the CPU ----------------------------------------
def _tones(batch: int, samples: int, rate: int):
    import torch
    t = torch.arange(samples) / rate
    f0 = torch.tensor([110.0, 220.0, 330.0, 440.0])[:batch, None]
    return 0.3 * sum(torch.sin(2 * torch.pi * k * f0 * t) / k for k in range(1, 6))


def test_gpu_profile_training_steps_in_float16_with_gradient_scaling():
    """The gpu profile's training step as it runs on CUDA (float16 autocast, gradient scaling: see
    flowsep.device.autocast_for and flowsep.trainer), here on the CPU: the published architecture at batch 2
    for a few steps on one batch. The loss stays finite and falls, and the trained flow still inverts."""
    import torch

    from flowsep.prior import FlowPrior, PriorConfig
    from flowsep.spectral import stft
    from flowsep.train import NLL

    torch.manual_seed(0)
    cfg = PriorConfig.preset("gpu", batch_size=2, segment_frames=32)
    assert (cfg.n_blocks, cfg.hidden, cfg.n_fft, cfg.sample_rate) == (12, 128, 1024, 22050)  # the published flow
    objective = NLL(FlowPrior(cfg))
    wave = _tones(2, cfg.hop * (cfg.segment_frames - 1), cfg.sample_rate)
    objective(wave)   # ActNorm's data-dependent initialisation, as training's first batch does
    dtypes = set()   # what the convolutions compute in: float16 under the autocast, as on CUDA
    for conv in (m for m in objective.modules() if isinstance(m, torch.nn.Conv1d)):
        conv.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
    opt = torch.optim.Adam(objective.parameters(), lr=cfg.lr)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    losses = []
    for _ in range(5):
        with torch.autocast("cpu", dtype=torch.float16):
            loss = objective(wave)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(objective.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert dtypes == {torch.float16}, dtypes
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < losses[0], losses
    prior = objective.prior.eval()
    with torch.no_grad():
        x = prior.encode(stft(wave, cfg.n_fft, cfg.hop).abs())[0]
        z, _ = prior(x)
        assert torch.allclose(prior.inverse(z), x, atol=1e-3 * float(x.abs().max()))


def test_gpu_profile_separation_of_a_short_clip():
    """The published search (instglow, 20 of its 150 steps here) through two priors of the gpu profile's
    architecture (untrained) on 1 s of a 44.1 kHz stereo clip, on the CPU: the estimates have the
    mixture's shape, are finite and add up to it."""
    import torch

    from flowsep.prior import FlowPrior, PriorConfig
    from flowsep.separate import Separator

    torch.manual_seed(0)
    cfg = PriorConfig.preset("gpu")
    priors = {name: FlowPrior(cfg).eval() for name in ("vocals", "bass")}
    rate = 44100
    mixture = torch.stack([_tones(1, rate, rate)[0], 0.5 * _tones(2, rate, rate)[1]])   # (2, samples)
    stems = Separator(priors, method="instglow", device="cpu", iterations=20)(mixture, rate)
    assert set(stems) == {"vocals", "bass"}
    for stem in stems.values():
        assert stem.shape == mixture.shape and torch.isfinite(torch.as_tensor(stem)).all()
    total = sum(torch.as_tensor(s) for s in stems.values())
    assert torch.allclose(total, mixture, atol=1e-3 * float(mixture.abs().max()))
