"""Training: the likelihood improves, resume is exact, DDP runs, checkpoints are atomic, bad input is caught."""
import copy
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from flowsep import FlowPrior, FlowsepError, PriorConfig
from flowsep.train import NLL, train_prior
from flowsep.trainer import Objective

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tone_dir(tmp_path_factory):
    """A folder of one 'instrument': harmonic tones of a few pitches, one stereo file at another rate."""
    d = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    for i, f0 in enumerate([110, 131, 147, 165, 196]):
        sr = 8000 if i else 11025
        t = np.arange(int(sr * 3)) / sr
        x = sum(0.4 / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) for k in range(1, 7))
        x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
        sf.write(d / f"tone{i}.wav", np.stack([x, 0.8 * x], 1) if i == 0 else x, sr)
    return d


def _cfg(**kw):
    return PriorConfig.preset("smoke", **kw)


def test_nll_falls_on_a_harmonic_signal(tone_dir):
    prior = train_prior(_cfg(val_every=50), tone_dir, steps=200, progress=False)
    h = prior.history
    first, last = np.mean(h["train_nll"][:10]), np.mean(h["train_nll"][-10:])
    assert last < first - 0.5, (first, last)
    assert h["val_nll"][-1] < h["val_nll"][0]


def test_resume_gives_the_same_weights(tone_dir, tmp_path):
    cfg = _cfg(checkpoint_every=10, val_every=10)
    straight = train_prior(cfg, tone_dir, out=tmp_path / "a.pt", steps=30, progress=False)
    train_prior(cfg, tone_dir, out=tmp_path / "b.pt", steps=20, progress=False)  # "interrupted" at 20
    resumed = train_prior(cfg, tone_dir, out=tmp_path / "b.pt", steps=30, resume=True, progress=False)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert resumed.history["step"] == list(range(1, 31))
    loaded = FlowPrior.load(tmp_path / "b.pt")
    mag = torch.rand(1, loaded.bins, 8)
    assert torch.equal(loaded.log_prob(mag), resumed.log_prob(mag))


def test_killed_cli_run_resumes_to_the_same_weights(tone_dir, tmp_path):
    """Kill a training process after its first checkpoint; --resume then ends where a clean run ends."""
    cmd = [sys.executable, "-m", "flowsep.cli", "train", "--data", str(tone_dir), "--profile", "smoke"]
    clean = tmp_path / "clean.pt"
    subprocess.run(cmd + ["--out", str(clean), "--steps", "400"], check=True, env=ENV, capture_output=True)
    killed = tmp_path / "killed.pt"
    proc = subprocess.Popen(cmd + ["--out", str(killed), "--steps", "400"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import time
    deadline = time.time() + 120
    while not killed.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    step_at_kill = torch.load(killed, weights_only=True)["train"]["step"]
    r = subprocess.run(cmd + ["--out", str(killed), "--steps", "400", "--resume"], env=ENV,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, b = FlowPrior.load(clean).state_dict(), FlowPrior.load(killed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), f"killed at step {step_at_kill}"
    assert step_at_kill < 400


def test_ddp_two_processes_match_one(tone_dir, tmp_path):
    """torchrun with 2 CPU processes (gloo) = one process on the same global batch (dropout off)."""
    args = ["-m", "flowsep.cli", "train", "--data", str(tone_dir), "--profile", "smoke", "--steps", "12",
            "--set", "dropout=0", "--set", "mixed_precision=false"]
    one = tmp_path / "one.pt"
    subprocess.run([sys.executable, *args, "--out", str(one)], check=True, env=ENV,
                   capture_output=True)
    two = tmp_path / "two.pt"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        *args, "--out", str(two)], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = FlowPrior.load(one).state_dict(), FlowPrior.load(two).state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4, rtol=1e-3), k
    assert any(not torch.equal(a[k], FlowPrior(PriorConfig.preset("smoke")).state_dict()[k]) for k in a)


def test_bad_training_inputs(tmp_path, tone_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FlowsepError, match="holds no audio files"):
        train_prior(_cfg(), empty, steps=1, progress=False)
    with pytest.raises(FlowsepError, match="does not exist"):
        train_prior(_cfg(), tmp_path / "nowhere", steps=1, progress=False)
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    sf.write(quiet / "a.wav", np.zeros(8000), 8000)
    sf.write(quiet / "b.wav", np.zeros(8000), 8000)
    with pytest.raises(FlowsepError, match="louder than"):
        train_prior(_cfg(), quiet, steps=1, progress=False)
    with pytest.raises(FlowsepError, match="steps must be positive"):
        train_prior(_cfg(), tone_dir, steps=0, progress=False)
    with pytest.raises(FlowsepError, match="no CUDA GPU") if not torch.cuda.is_available() else pytest.raises(Exception):
        train_prior(_cfg(), tone_dir, steps=1, device="cuda", progress=False)


@pytest.mark.parametrize("extra, message", [
    (["--profile", "huge"], "unknown profile 'huge'"),
    (["--steps", "-3"], "steps must be positive"),
    (["--device", "tpu"], "unknown device"),
    (["--set", "wings=2"], "expected KEY=VALUE"),
    (["--set", "lr=fast"], "not a valid float"),
    (["--seconds", "0"], "seconds must be positive"),
    (["--steps", "5", "--seconds", "1"], "not both"),
])
def test_cli_errors_are_one_line(tone_dir, tmp_path, extra, message):
    r = subprocess.run([sys.executable, "-m", "flowsep.cli", "train", "--data", str(tone_dir), "--profile", "smoke",
                        "--out", str(tmp_path / "x.pt"), *extra], env=ENV, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and message in r.stderr, r.stderr
    assert not (tmp_path / "x.pt").exists()


def test_cli_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, "-m", "flowsep.cli", "train", "--data", str(tmp_path / "empty"),
                        "--profile", "smoke", "--out", str(tmp_path / "x.pt")], env=ENV, capture_output=True, text=True)
    assert r.returncode == 2 and "holds no audio files" in r.stderr and "Traceback" not in r.stderr


def test_atomic_writes_leave_no_temporary_file_and_normal_permissions(tmp_path):
    from flowsep.io import atomic_path, save_torch
    target = tmp_path / "ckpt.pt"
    save_torch({"a": torch.zeros(2)}, target)
    mask = os.umask(0o022)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert torch.load(target)["a"].shape == (2,), "a failed write replaced the previous file"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


class _Toy(Objective):
    """A one-parameter model whose loss on the item of step s is losses[s] * w (Adam moves w by lr a step)."""

    key = "x"

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, batch):
        return (batch * self.w).sum()

    def checkpoint(self):
        return {"w": float(self.w.detach())}


def _toy_fit(losses, monkeypatch, saves, budget=None, state=None, toy=None, clock=None, **settings):
    """fit on :class:`_Toy`, item s of the training set losses[s], validation items 1.0 (so val_x is w);
    ``saves`` receives the training state of every checkpoint, in order. Returns (the history, the toy)."""
    from flowsep import trainer
    monkeypatch.setattr(trainer, "save_torch", lambda ckpt, out: saves.append(copy.deepcopy(ckpt["train"])))
    config = trainer.TrainingSettings(**{**dict(steps=len(losses), batch_size=1, lr=0.1, grad_clip=4.0,
                                                mixed_precision=False, val_every=2, val_batches=1,
                                                checkpoint_every=3), **settings})
    toy = toy or _Toy()
    history = trainer.fit(toy, [torch.tensor(v) for v in losses], [torch.tensor(1.0)], config,
                          budget=budget or {"steps": len(losses)}, device=torch.device("cpu"), out="unused",
                          state=state, progress=False, **({"clock": clock} if clock else {}))
    return history, toy


def test_the_loop_validates_and_checkpoints_on_schedule(monkeypatch):
    saves = []
    history, _ = _toy_fit([1.0] * 7, monkeypatch, saves)
    assert history["step"] == [1, 2, 3, 4, 5, 6, 7]
    assert history["train_x"] == pytest.approx([1.0 - 0.1 * s for s in range(7)])  # the loss is w itself
    assert history["val_step"] == [2, 4, 6, 7]
    assert history["val_x"][0] == pytest.approx(1.0 - 2 * 0.1)  # two Adam steps of lr on d(w)/dw = 1
    assert [s["step"] for s in saves] == [3, 6, 7]  # every 3 steps, then the end
    assert history["seconds"] >= 0


def test_the_loop_stops_on_a_non_finite_loss_after_saving(monkeypatch):
    saves = []
    with pytest.raises(FlowsepError, match="diverged at step 2"):
        _toy_fit([1.0, 1.0, float("nan"), 1.0], monkeypatch, saves)
    assert [s["step"] for s in saves] == [2], "the last good state must be saved before stopping"


def test_the_loop_stops_at_a_time_budget_and_resumes_within_it(monkeypatch):
    """A fake clock: each step takes exactly 1 s; validation and checkpoints take clock time that is not counted."""
    ticks = iter(range(10_000))
    clock = lambda: float(next(ticks))
    # the rate decays x0.1 once half the budget is used: 0, 1/4.5, 2/4.5 -> 0.1; then 0.01
    decay = dict(steps=2, lr_decay=0.1, lr_decay_every=1)
    saves = []
    history, toy = _toy_fit([1.0] * 50, monkeypatch, saves, budget={"seconds": 4.5}, clock=clock, **decay)
    assert history["step"] == [1, 2, 3, 4, 5]          # the first step that reaches 4.5 s is the last
    assert history["elapsed"] == [1.0, 2.0, 3.0, 4.0, 5.0] and history["seconds"] == 5.0
    assert history["val_step"] == [2, 4, 5] and [s["step"] for s in saves] == [3, 5]
    assert history["train_x"] == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.69])
    # resume: the seconds already spent count, so two more steps reach a 7 s budget
    history, _ = _toy_fit([1.0] * 50, monkeypatch, saves, budget={"seconds": 7.0}, state={"train": saves[-1]},
                          toy=toy, clock=clock, checkpoint_every=100, val_every=100, **decay)
    assert history["step"] == [1, 2, 3, 4, 5, 6, 7] and history["elapsed"][5:] == [6.0, 7.0]
    assert saves[-1]["step"] == 7


def test_both_configs_share_the_loops_settings():
    from flowsep.baselines.models import SupervisedConfig
    from flowsep.trainer import TrainingSettings, decay_count
    umx, prior = SupervisedConfig.preset("openunmix", "smoke"), PriorConfig.preset("smoke")
    assert isinstance(umx, TrainingSettings) and isinstance(prior, TrainingSettings)
    assert decay_count(1.0, umx) == 0 and prior.weight_decay == 0.0   # no decay; no weight decay
    # a checkpoint written before the shared settings existed reads as the same configuration
    old = {k: v for k, v in dataclasses.asdict(prior).items() if k != "weight_decay"}
    assert PriorConfig.from_dict(old) == prior
    old = {k: v for k, v in dataclasses.asdict(umx).items() if k not in ("lr_decay", "lr_decay_every")}
    assert SupervisedConfig.from_dict(old) == umx


def test_learning_rate_decays_at_fractions_of_the_budget():
    from fractions import Fraction

    from flowsep.trainer import decay_count, scheduled_lr
    cfg = PriorConfig.preset("cpu")          # 1000 steps, x0.3 after 700
    # at the profile's own length the rates are StepLR's, bit for bit
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    steplr = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_decay_every, gamma=cfg.lr_decay)
    for s in range(cfg.steps):
        assert scheduled_lr(cfg, Fraction(s, cfg.steps)) == opt.param_groups[0]["lr"], s
        opt.step()
        steplr.step()
    # another step budget stretches the schedule: --steps 3800 decays after 2660 steps, not 700
    assert decay_count(Fraction(2659, 3800), cfg) == 0 and decay_count(Fraction(2660, 3800), cfg) == 1
    # a time budget decays at the same fraction of its seconds
    assert scheduled_lr(cfg, 0.69) == cfg.lr and scheduled_lr(cfg, 0.71) == cfg.lr * cfg.lr_decay
    paper = PriorConfig.preset("paper")      # x0.3 after 1/3 and 2/3 of the budget
    assert [decay_count(p, paper) for p in (0.3, 0.34, 0.67, 0.99)] == [0, 1, 2, 2]


def test_a_time_budget_stops_writes_and_resumes(tone_dir, tmp_path):
    """--seconds: steps and training seconds recorded together; --resume continues within the budget."""
    ckpt = tmp_path / "t.pt"
    cfg = _cfg(checkpoint_every=5, val_every=5)
    prior = train_prior(cfg, tone_dir, out=ckpt, seconds=1.0, progress=False)
    h = prior.history
    n = len(h["step"])
    assert h["step"] == list(range(1, n + 1)) and len(h["elapsed"]) == n
    assert all(b > a for a, b in zip(h["elapsed"], h["elapsed"][1:]))
    assert h["seconds"] == h["elapsed"][-1] >= 1.0          # stopped by the budget...
    assert n == 1 or h["elapsed"][-2] < 1.0                 # ...at the first step that reached it
    assert h["val_step"][-1] == n                           # a final validation
    saved = torch.load(ckpt, weights_only=True)["train"]
    assert saved["budget"] == {"seconds": 1.0} and saved["step"] == n
    assert saved["history"]["elapsed"] == h["elapsed"]
    # resuming without a budget keeps the checkpoint's: it is spent, nothing more is trained
    again = train_prior(cfg, tone_dir, out=ckpt, resume=True, progress=False)
    assert again.history["step"] == h["step"]
    # a larger budget continues from where the run stopped
    more = train_prior(cfg, tone_dir, out=ckpt, seconds=2.0, resume=True, progress=False).history
    assert more["step"][:n] == h["step"] and more["elapsed"][:n] == h["elapsed"]
    assert more["step"] == list(range(1, len(more["step"]) + 1)) and len(more["step"]) > n
    assert more["seconds"] == more["elapsed"][-1] >= 2.0 and more["elapsed"][-2] < 2.0
    assert torch.load(ckpt, weights_only=True)["train"]["budget"] == {"seconds": 2.0}


def test_profile_time_budget_is_the_default(tone_dir):
    h = train_prior(_cfg(train_seconds=0.5, val_every=1000), tone_dir, progress=False).history
    assert h["seconds"] >= 0.5 and (len(h["step"]) == 1 or h["elapsed"][-2] < 0.5)  # not the profile's 60 steps
    with pytest.raises(FlowsepError, match="not both"):
        train_prior(_cfg(), tone_dir, steps=3, seconds=1.0, progress=False)


def test_gpu_profile_is_the_published_flow_on_a_time_budget():
    """gpu: the paper's architecture and batch, fp16 on CUDA, log magnitudes, a wall-clock budget per prior."""
    from flowsep.baselines import SupervisedConfig
    from flowsep.trainer import resolve_budget
    gpu, paper = PriorConfig.preset("gpu"), PriorConfig.preset("paper")
    arch = ("sample_rate", "n_fft", "hop", "n_blocks", "hidden", "kernel", "n_layers", "n_split", "n_sqz",
            "batch_size", "segment_frames", "mixed_precision")
    assert all(getattr(gpu, k) == getattr(paper, k) for k in arch)
    assert gpu.transform == "log" and gpu.train_seconds > 0
    assert resolve_budget(None, None, gpu.steps, gpu.train_seconds) == {"seconds": gpu.train_seconds}
    assert resolve_budget(100, None, gpu.steps, gpu.train_seconds) == {"steps": 100}
    assert 0 < gpu.lr_decay_every < gpu.steps
    for name in ("openunmix", "convtasnet", "demucs", "waveunet"):   # the same seconds for every learned system
        c = SupervisedConfig.preset(name, "gpu")
        assert c.train_seconds == gpu.train_seconds and c.sample_rate == gpu.sample_rate


def test_noise_conditioned_training_from_the_command_line(tone_dir, tmp_path):
    """`flowsep train --set noise_levels=N` trains a noise-conditioned prior; its loss falls and it saves its levels."""
    from flowsep.cli import main
    out = tmp_path / "noisy.pt"
    assert main(["train", "--data", str(tone_dir), "--profile", "smoke", "--steps", "120", "--set",
                 "noise_levels=6", "--out", str(out), "--quiet"]) == 0
    prior = FlowPrior.load(out)
    assert prior.noise_conditioned and prior.config.noise_levels == 6
    h = torch.load(out, weights_only=False)["train"]["history"]
    assert np.mean(h["train_nll"][-10:]) < np.mean(h["train_nll"][:10]) - 0.3
    # validation draws its noise from a fixed seed: the same batch, the same loss; training draws afresh
    nll = NLL(prior)
    wave = 0.1 * torch.randn(2, 15 * prior.config.hop)  # 16 frames
    with torch.no_grad():
        assert float(nll.eval()(wave)) == float(nll(wave))
        assert float(nll.train()(wave)) != float(nll(wave))
