"""Prior bundles: one trained prior per source in a folder, with a manifest saying where they came from.

Chapter: "Training the source priors"; README, "Separate your own song".

A bundle is what a reader trains once and hands to a friend; its folder name is its name
(``flowsep separate -p BUNDLE`` writes ``separated/<name>/<track>/<stem>.wav``)::

    BUNDLE/bundle.json     the manifest
    BUNDLE/<source>.pt     one prior checkpoint per source (flowsep train's format: training resumes from it)

bundle.json::

    {"format": "flowsep-bundle", "format_version": 1, "flowsep_version": "0.1.0",
     "profile": "cpu", "overrides": {}, "sample_rate": 16000,
     "data": {"name": "synth-cpu-seed0", "train_tracks": 16},
     "sources": {"vocals": {"checkpoint": "vocals.pt", "sha256": "...", "steps": 1000, "seconds": 301.2,
                            "budget": {"steps": 1000}, "val_bits_per_dim": 1.234}, ...}}

:func:`build_bundle` trains every source (``flowsep priors build``), :func:`train_into_bundle` one source
(:func:`flowsep.cache.ensure_prior` builds the book's priors with it), :func:`verify_bundle` checks the
manifest and the checksums (``flowsep priors info``) and :func:`load_bundle` gives ``{source: FlowPrior}``
for :class:`flowsep.Separator`.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
from dataclasses import asdict
from pathlib import Path

from . import __version__
from .constants import TARGETS
from .data.musdb import is_musdb_root, open_db, resolve_root
from .errors import FlowsepError
from .io import atomic_path, check_writable_dir
from .prior import FlowPrior, PriorConfig
from .train import parse_overrides, train_prior
from .trainer import ensure_trained, resolve_budget

MANIFEST = "bundle.json"
BUNDLE_FORMAT = 1


# ---- the manifest ------------------------------------------------------------------------------------
def is_bundle(path) -> bool:
    """True if ``path`` is a folder with a bundle.json."""
    return (Path(path) / MANIFEST).is_file()


def sha256_of(path) -> str:
    """Hex sha256 of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            h.update(piece)
    return h.hexdigest()


def read_manifest(path) -> dict:
    """The manifest of the bundle folder ``path`` (one-line errors for a missing or damaged one)."""
    path = Path(path)
    if not path.is_dir():
        raise FlowsepError(f"prior bundle {path} not found; build one with `flowsep priors build --out {path} ...`")
    file = path / MANIFEST
    if not file.is_file():
        raise FlowsepError(f"{path} is not a prior bundle (it has no {MANIFEST}); build one with "
                           f"`flowsep priors build --out {path} ...`, or finish it with --resume")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FlowsepError(f"{file} is damaged ({type(e).__name__}); rebuild the bundle or copy it again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "flowsep-bundle":
        raise FlowsepError(f"{file} is not a flowsep bundle manifest; rebuild the bundle or copy it again")
    if manifest.get("format_version") != BUNDLE_FORMAT:
        raise FlowsepError(f"{file} has bundle format {manifest.get('format_version')} (flowsep "
                           f"{manifest.get('flowsep_version')}); this flowsep {__version__} reads format "
                           f"{BUNDLE_FORMAT}: use a matching flowsep or rebuild the bundle")
    if not isinstance(manifest.get("sources"), dict):
        raise FlowsepError(f"{file} lists no sources; rebuild the bundle")
    return manifest


def _write_manifest(path: Path, manifest: dict) -> None:
    with atomic_path(path / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on the bundle folder while its manifest is read, changed and written back."""
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY)  # the folder itself: no lock file left inside the bundle
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def verify_bundle(path) -> dict:
    """The manifest of ``path`` after checking that every checkpoint it lists is there, unchanged.

    Raises one FlowsepError naming every missing or altered checkpoint.
    """
    path = Path(path)
    manifest = read_manifest(path)
    if not manifest["sources"]:
        raise FlowsepError(f"bundle {path} has no finished prior yet; finish it with "
                           f"`flowsep priors build --out {path} --resume ...`")
    bad = []
    for name, entry in manifest["sources"].items():
        ckpt = path / entry.get("checkpoint", f"{name}.pt")
        if not ckpt.is_file():
            bad.append(f"{ckpt.name} ({name}) is missing")
        elif sha256_of(ckpt) != entry.get("sha256"):
            bad.append(f"{ckpt.name} ({name}) does not match its sha256")
    if bad:
        raise FlowsepError(f"bundle {path}: {'; '.join(bad)}; the checkpoint is corrupt or was changed: "
                           f"rebuild it (flowsep priors build --out {path} --resume) or copy the bundle again")
    return manifest


class Bundle(dict):
    """``{source: FlowPrior}`` loaded from a bundle folder, with its ``name``, ``path`` and ``manifest``.

    A dict, so it goes wherever priors go: ``flowsep.Separator(flowsep.load_bundle("priors/cpu"))``.
    """

    def __init__(self, priors: dict, name: str, path: Path | None = None, manifest: dict | None = None):
        super().__init__(priors)
        self.name, self.path, self.manifest = name, path, manifest or {}


def load_bundle(path, verify: bool = True) -> Bundle:
    """Load every prior of the bundle folder ``path`` (checksums checked first unless ``verify=False``)."""
    path = Path(path)
    manifest = verify_bundle(path) if verify else read_manifest(path)
    priors = {name: FlowPrior.load(path / entry.get("checkpoint", f"{name}.pt"))
              for name, entry in manifest["sources"].items()}
    return Bundle(priors, bundle_name(path), path, manifest)


def bundle_name(path) -> str:
    """A bundle's name: its folder's name."""
    return Path(path).resolve().name


# ---- training into a bundle ----------------------------------------------------------------------------
def _data_info(data: Path) -> dict:
    return {"name": data.resolve().name, "train_tracks": len(open_db(data, "train").tracks)}


def train_into_bundle(bundle, source: str, cfg: PriorConfig, data, steps: int | None = None,
                      seconds: float | None = None, device="auto", progress: bool = True,
                      resume: bool = True, retrain_other_config: bool = False) -> FlowPrior:
    """Train the prior of ``source`` into the bundle folder ``bundle`` and record it in the manifest.

    A finished checkpoint of the same model (its budget spent) is reused; an unfinished one is resumed
    when ``resume``. A checkpoint of another model is trained anew with ``retrain_other_config`` (the
    book's caching), else it is an error. The manifest gets the source's sha256, steps and seconds.
    """
    bundle, data = Path(bundle), Path(data)
    budget = resolve_budget(steps, seconds, cfg.steps, cfg.train_seconds)
    ckpt_path = bundle / f"{source}.pt"
    recorded = dict(budget)

    def train(keep_going: bool) -> FlowPrior:
        if keep_going and not resume:
            raise FlowsepError(f"{ckpt_path} holds an unfinished prior; pass --resume to continue it")
        return train_prior(cfg, data, source, out=ckpt_path, device=device, resume=keep_going, progress=progress,
                           **budget)

    def load(ckpt: dict) -> FlowPrior:
        prior = FlowPrior.from_checkpoint(ckpt["prior"], ckpt_path)
        prior.history = ckpt["train"].get("history", {})
        recorded.update(ckpt["train"].get("budget", budget))  # the budget it was trained with
        return prior

    def config_of(ckpt: dict):
        # completed with the defaults of settings added since it was saved, as FlowPrior.load does
        stored = ckpt.get("prior", {}).get("config")
        return asdict(PriorConfig.from_dict(stored, str(ckpt_path))) if isinstance(stored, dict) else None

    prior = ensure_trained(ckpt_path, config_of, asdict(cfg), budget,
                           train=train, load=load, what="prior checkpoint",
                           other_config="retrain" if retrain_other_config else "error")
    _record(bundle, source, ckpt_path, prior, cfg, data, recorded)
    return prior


def _record(bundle: Path, source: str, ckpt_path: Path, prior: FlowPrior, cfg: PriorConfig, data: Path,
            budget: dict) -> None:
    """Add (or refresh) ``source`` in the manifest, creating it for the first prior of the bundle.

    budget: the one the checkpoint was trained with. An unchanged entry leaves the manifest untouched.
    """
    h = getattr(prior, "history", {}) or {}
    val = h.get("val_nll") or []
    entry = {"checkpoint": ckpt_path.name, "sha256": sha256_of(ckpt_path),
             "steps": int(h["step"][-1]) if h.get("step") else 0,
             "seconds": round(float(h.get("seconds", 0.0)), 3), "budget": budget,
             "val_bits_per_dim": round(val[-1] / math.log(2), 4) if val else None}
    defaults = asdict(PriorConfig.preset(cfg.profile)) if cfg.profile != "custom" else {}
    overrides = {k: v for k, v in asdict(cfg).items() if defaults and defaults.get(k) != v}
    with _locked(bundle):
        manifest = read_manifest(bundle) if is_bundle(bundle) else None
        if manifest is None:
            manifest = {"format": "flowsep-bundle", "format_version": BUNDLE_FORMAT, "flowsep_version": __version__,
                        "profile": cfg.profile, "overrides": overrides, "sample_rate": cfg.sample_rate,
                        "data": _data_info(data), "sources": {}}
        if manifest["sources"].get(source) == entry:
            return
        manifest["sources"][source] = entry
        manifest["flowsep_version"] = __version__
        _write_manifest(bundle, manifest)


def _check_same_bundle(out: Path, cfg: PriorConfig, data: Path) -> None:
    """An existing bundle at ``out`` must hold priors of the same profile, trained on the same data."""
    if not is_bundle(out):
        return
    m = read_manifest(out)
    if m.get("profile") != cfg.profile or m.get("sample_rate") != cfg.sample_rate:
        raise FlowsepError(f"bundle {out} holds priors of profile {m.get('profile')}, not {cfg.profile}; "
                           "give another --out")
    name = m.get("data", {}).get("name")
    if name != data.resolve().name:
        raise FlowsepError(f"bundle {out} was trained on {name}, not {data.resolve().name}; give another --out")


def build_bundle(data, profile: str, out, sources=None, steps: int | None = None, seconds: float | None = None,
                 resume: bool = False, device="auto", progress: bool = True, log=print, **overrides) -> Bundle:
    """Train one prior per source of the MUSDB18-format root ``data`` into the folder ``out``.

    sources: names of stems (default: every stem of the training tracks). steps / seconds: the budget of
    each prior (default: the profile's; :func:`flowsep.trainer.resolve_budget`). resume: keep the finished
    priors of an earlier run and continue its unfinished one; without it ``out`` must be new or empty.
    Returns the loaded bundle.
    """
    data, out = Path(data), check_writable_dir(out)
    if not data.is_dir() or not is_musdb_root(data):
        raise FlowsepError(f"--data {data} is not a MUSDB18-format root (no train/ or test/ folder); "
                           f"run `flowsep synth {data}` or give a MUSDB18 folder")
    cfg = PriorConfig.preset(profile, **overrides)
    resolve_budget(steps, seconds, cfg.steps, cfg.train_seconds)  # a bad budget fails before anything
    tracks = open_db(data, "train").tracks
    if not tracks:
        raise FlowsepError(f"{data} has no training tracks; generate or download some first")
    known = list(tracks[0].sources)
    if sources is None:
        sources = [s for s in TARGETS if s in known] + sorted(s for s in known if s not in TARGETS)
    sources = list(dict.fromkeys(sources))
    unknown = [s for s in sources if s not in known]
    if unknown or not sources:
        raise FlowsepError(f"unknown source {unknown[0] if unknown else '(none)'!r} in {data}; choose from: "
                           f"{', '.join(known)}")
    if out.is_dir() and any(out.iterdir()):
        if not resume:
            raise FlowsepError(f"{out} is not empty; pass --resume to continue that bundle or give a new --out")
        _check_same_bundle(out, cfg, data)
    for i, source in enumerate(sources, 1):
        log(f"[{i}/{len(sources)}] prior {source} -> {out / (source + '.pt')}")
        train_into_bundle(out, source, cfg, data, steps=steps, seconds=seconds, device=device, progress=progress,
                          resume=resume)
    return load_bundle(out)


# ---- command line -----------------------------------------------------------------------------------
def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "priors", help="build a bundle of priors (one per source) or show and check one",
        description="A prior bundle is a folder with one prior per source and bundle.json (sources, profile, "
                    "training data, steps and seconds per prior, flowsep version, sha256 of every checkpoint). "
                    "Use it with `flowsep separate -p BUNDLE`, `flowsep evaluate -p BUNDLE` or "
                    "flowsep.load_bundle(BUNDLE).")
    sub = p.add_subparsers(dest="priors_verb", metavar="{build,info}")
    sub.required = True
    b = sub.add_parser("build", help="train one prior per source into a bundle folder",
                       description="Train one prior per source of a MUSDB18-format root into OUT and write "
                                   "OUT/bundle.json. An interrupted build continues with --resume.")
    b.add_argument("--data", required=True, metavar="ROOT", help="MUSDB18-format root (e.g. from flowsep synth)")
    b.add_argument("--profile", default="cpu", help="smoke, cpu, gpu or paper (default: cpu)")
    b.add_argument("--out", required=True, metavar="DIR", help="the bundle folder; its name is the bundle's name")
    b.add_argument("--sources", default=None, metavar="LIST",
                   help="comma-separated stems (default: every stem of the data, e.g. vocals,drums,bass,other)")
    budget = b.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=None, help="training steps per prior (default: the profile's)")
    budget.add_argument("--seconds", type=float, default=None, help="training time budget per prior, in seconds")
    b.add_argument("--resume", action="store_true",
                   help="keep the finished priors in OUT and continue the unfinished one")
    b.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting of the profile for every prior, e.g. --set noise_levels=10 "
                        "(noise-conditioned priors, for --method annealed)")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=_cli_build)
    i = sub.add_parser("info", help="print a bundle's manifest and check its checkpoints' sha256",
                       description="Print what bundle.json says and check every checkpoint against its sha256; "
                                   "a missing or altered checkpoint is an error (exit status 2).")
    i.add_argument("bundle", metavar="BUNDLE", help="the bundle folder")
    i.set_defaults(func=_cli_info)


def _cli_build(args) -> int:
    sources = [s.strip() for s in args.sources.split(",") if s.strip()] if args.sources is not None else None

    bundle = build_bundle(resolve_root(args.data), args.profile, args.out, sources=sources, steps=args.steps,
                          seconds=args.seconds, resume=args.resume, device=args.device, progress=not args.quiet,
                          log=(lambda *a: None) if args.quiet else print, **parse_overrides(args.set))
    print(f"wrote bundle {bundle.name} ({', '.join(bundle)}) to {args.out}")
    return 0


def format_manifest(path, manifest: dict) -> str:
    """The manifest as a few lines of text: provenance, then one row per source."""
    d = manifest.get("data", {})
    over = manifest.get("overrides") or {}
    lines = [f"bundle {bundle_name(path)} ({Path(path)})",
             f"  flowsep {manifest.get('flowsep_version')}, profile {manifest.get('profile')}"
             + (" with " + ", ".join(f"{k}={v}" for k, v in over.items()) if over else "")
             + f", {manifest.get('sample_rate')} Hz",
             f"  trained on {d.get('name')} ({d.get('train_tracks')} training tracks)",
             f"  {'source':<10} {'steps':>7} {'seconds':>9} {'val bits/dim':>12}  sha256"]
    for name, e in manifest["sources"].items():
        val = e.get("val_bits_per_dim")
        lines.append(f"  {name:<10} {e.get('steps', 0):>7} {e.get('seconds', 0.0):>9.1f} "
                     f"{'-' if val is None else f'{val:.3f}':>12}  {str(e.get('sha256'))[:16]}")
    return "\n".join(lines)


def _cli_info(args) -> int:
    path = Path(args.bundle)
    manifest = read_manifest(path)
    print(format_manifest(path, manifest))
    verify_bundle(path)
    print(f"checksums: the {len(manifest['sources'])} checkpoint(s) match bundle.json")
    return 0
