"""flowsep: music source separation with generative flow priors (InstGlow), and the book around it.

The public API::

    import flowsep
    cfg = flowsep.PriorConfig.preset("smoke" | "cpu" | "paper")
    prior = flowsep.FlowPrior(cfg)
    z, logdet = prior(x); x = prior.inverse(z); prior.log_prob(mag); prior.sample(n, frames)
    sep = flowsep.Separator({"vocals": p1, "bass": p2}); stems = sep(mixture, sample_rate)
    priors = flowsep.load_bundle("data/priors/my-bundle")       # {source: FlowPrior}, checksums checked
    paths = flowsep.separate_file("song.mp3", priors, out="separated")   # one file per stem

The modules, in the order the data flows (each imports only modules above it; the chapter that teaches it):

    errors          the one exception for a user's mistake, and how commands report it       (all)
    constants       targets, profiles, comparison systems and their names                    1, preface, 6
    verdict         the one rule that words a comparison (ahead, behind, tied) from its interval 5, 6, 7
    paper           the InstGlow paper's numbers and settings, once, with their source        1, 6
    device          cpu/cuda, mixed precision, the processes of a distributed run            4, 5
    io              atomic files, audio read/write, checkpoints' format check, data folder    (all)
    progress        progress bars (off under FLOWSEP_PROGRESS=0)                              (all)
    worklog         what each chapter made and reused, and how long making it took            preface
    memory          sizes, free memory, what autograd saves (planning long separations)       5
    spectral        STFT, resampling, mono, fit-length, segments and overlap-add              3
    data/           synthetic MUSDB18 (voice, compose, synth), musdb roots, training chunks   1, 4
    trainer         the one training loop (settings, budgets, schedule, resume, DDP), its cache 4, 6
    flows           Glow's layers, each with forward, inverse and log-determinant             2, 3
    prior           FlowPrior: a Glow over magnitude spectrograms, its config and files       3, 4
    train           a prior's loss and data, `flowsep train`                                  4
    filtering       ratio masks and the multichannel Wiener filter                            5, 6
    bsseval         BSS Eval v4: museval's numbers, the arithmetic arranged to take less time   6
    frozen          the priors of a separation, frozen and run together (batched, vmapped)   5
    search          the objective, and one search per strategy: latents, masks, annealed     5
    parts           songs as items, segments and chunks planned from memory; cross-fades     5
    render          magnitudes to waveforms: mixture phase, post-filters, block by block      5
    separate        the Separator: a method's search, parts and rendering as one call        5
    bundle          folders of trained priors with a manifest, `flowsep priors`              4, README
    separate_files  songs on disk into stem files, `flowsep separate`                        README
    baselines/      Open-Unmix, Demucs, Conv-TasNet, Wave-U-Net (training, separation), oracles 6
    evaluate        museval scoring of separators and estimate folders, `flowsep evaluate`     6
    cache           the book's datasets and priors, made once and reused                      every chapter
    ledger          each claim of the paper beside this run's value, and flowsep's deviations 6, 7
    comparison      the paper's comparison rerun, `flowsep benchmark`                         6
    analysis        what the chapters measure (log-dets by autograd, likelihood matrices)    2, 3, 4, 7
    plots, widgets  figures, audio players and controls for the chapters                      every chapter
    book_build      `make book`: run the chapters, render the book                            -
    colab_setup     the chapters' first cell on Colab: flowsep beside Colab's own packages   every chapter
    cli             the `flowsep` command; imports a verb's module only when it runs          -
"""
__version__ = "0.1.0"

from .errors import FlowsepError  # noqa: E402
from .prior import FlowPrior, PriorConfig  # noqa: E402

__all__ = ["FlowsepError", "FlowPrior", "PriorConfig", "__version__"]


def __getattr__(name):
    # heavier parts load on first use, so `import flowsep` stays quick
    if name == "Separator":
        from .separate import Separator
        return Separator
    if name == "load_bundle":
        from .bundle import load_bundle
        return load_bundle
    if name == "separate_file":
        from .separate_files import separate_file
        return separate_file
    raise AttributeError(f"module 'flowsep' has no attribute {name!r}")
