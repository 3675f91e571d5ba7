"""Shared fixtures. Datasets are generated once per test session in a temporary folder."""
import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A small synthetic MUSDB18: 3 train tracks (one of them in the valid split), 2 test tracks, 6 s each."""
    from flowsep.data.synth import synthesize
    root = tmp_path_factory.mktemp("synth") / "musdb"
    synthesize(root, n_train=3, n_test=2, seconds=6.0, seed=0, progress=False)
    return root
