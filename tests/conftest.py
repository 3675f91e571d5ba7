"""Shared fixtures. Datasets are generated once per test session in a temporary folder."""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # museval's linear algebra: one thread is faster on 2 cores

import pytest  # noqa: E402
import torch  # noqa: E402

# the tests' models are tiny: one thread each is faster than two threads fighting for two cores
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A small synthetic MUSDB18: 3 train tracks (one of them in the valid split), 2 test tracks, 6 s each."""
    from flowsep.data.synth import synthesize
    root = tmp_path_factory.mktemp("synth") / "musdb"
    synthesize(root, n_train=3, n_test=2, seconds=6.0, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    """The whole book executed at the smoke profile and rendered with strict warnings, once per session.

    Data and priors are generated in a temporary $FLOWSEP_DATA (never in data/). Returns a namespace:
    root (the repository), out (the build folder), html (the rendered book), timings (the build's
    timings.json as a dict) and chapters (the chapter notebooks of _toc.yml).
    """
    from types import SimpleNamespace

    from flowsep import book_build

    data = tmp_path_factory.mktemp("book-data")
    out = tmp_path_factory.mktemp("book") / "_build"
    # the kernels inherit this environment; the smoke models are tiny, and one thread per kernel
    # avoids the synchronisation stalls of several threads on a shared 2-core machine
    env = {"FLOWSEP_DATA": str(data), "OMP_NUM_THREADS": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        timings = book_build.build("smoke", out=out, strict=True)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    root = book_build.find_root()
    return SimpleNamespace(root=root, out=out, html=out / "html", timings=timings,
                           chapters=book_build.chapters(root))
