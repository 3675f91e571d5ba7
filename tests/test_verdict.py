"""The book's one rule for wording a comparison (flowsep.verdict) and the top group it gives a race
(flowsep.comparison.leaders)."""
import math

import numpy as np
import pandas as pd
import pytest

from flowsep import verdict
from flowsep.comparison import leaders


def test_a_direction_only_when_the_interval_excludes_zero():
    assert verdict.relation(0.1, 0.9) == verdict.AHEAD
    assert verdict.relation(-0.9, -0.1) == verdict.BEHIND
    assert verdict.relation(-1.41, 1.29) == verdict.TIED
    assert verdict.relation(0.0, 0.5) == verdict.TIED            # touching zero is no evidence
    assert verdict.relation(-0.5, 0.0) == verdict.TIED
    assert verdict.relation(math.nan, 0.5) == verdict.TIED       # unknown: no direction
    with pytest.raises(ValueError):
        verdict.relation(1.0, -1.0)


def test_sentences_say_the_direction_and_the_interval():
    assert verdict.sentence("Open-Unmix", "InstGlow", -0.06, -1.41, 1.29) == (
        "Open-Unmix is tied with InstGlow (paired difference -0.06 dB, 95% interval -1.41 to +1.29 dB)")
    assert verdict.sentence("A", "B", -0.31, -0.52, -0.10) == (
        "A is behind B by 0.31 dB (paired 95% interval -0.52 to -0.10 dB)")
    assert verdict.sentence("A", "B", 2.0, 1.0, 3.0, unit="nats").startswith("A is ahead of B by 2.00 nats")


def _songs(values):
    """(songs, 2 targets) frame of per-song SDRs."""
    v = np.asarray(values, dtype=float)
    return pd.DataFrame(np.stack([v, v + 0.1], 1), index=[f"song{i}" for i in range(len(v))],
                        columns=["vocals", "bass"])


def test_leaders_are_the_systems_nobody_is_ahead_of():
    base = np.array([1.0, 3.0, 2.0, 5.0, 4.0, 2.5])
    per_track = {"a": _songs(base + 1.0),            # ahead of c on every song
                 "b": _songs(base + np.array([1.5, 0.2, 1.6, 0.1, 1.9, 0.4])),   # mixed against a: tied
                 "c": _songs(base)}
    assert leaders(per_track) == ["b", "a"] or leaders(per_track) == ["a", "b"]
    top = leaders(per_track)
    assert "c" not in top and top[0] == max(top, key=lambda k: per_track[k].to_numpy().mean())
    # one clear winner
    assert leaders({"x": _songs(base + 2), "y": _songs(base)}) == ["x"]
    # indistinguishable: both lead
    noise = np.array([0.3, -0.2, 0.25, -0.3, 0.1, -0.15])
    assert sorted(leaders({"x": _songs(base + noise), "y": _songs(base)})) == ["x", "y"]


def test_the_top_group_in_words():
    from flowsep.verdict import top_sentence
    one = top_sentence(["InstGlow"], 4.2)
    assert one.startswith("the best learned system here is InstGlow") and "behind it" in one
    two = top_sentence(["Open-Unmix", "InstGlow", "HDemucs"], 4.48)
    assert two.startswith("Open-Unmix, InstGlow and HDemucs share the top") and "cannot order" in two
    assert "Open-Unmix has the highest mean, 4.48 dB" in two and "best" not in two
    with pytest.raises(ValueError):
        top_sentence([], 0.0)


def test_a_difference_without_interval_is_worded_by_its_sign_and_size():
    assert verdict.change(0.5) == "improves by 0.50 dB"
    assert verdict.change(-0.44) == "loses 0.44 dB"
    assert verdict.change(0.04) == "changes by less than 0.1 dB"
    assert verdict.change(-0.099) == "changes by less than 0.1 dB"
    assert verdict.change(2.0, unit="nats", small=0.5) == "improves by 2.00 nats"
    assert "missing" in verdict.change(math.nan)
    assert verdict.listing(["a"]) == "a" and verdict.listing(["a", "b", "c"]) == "a, b and c"
    with pytest.raises(ValueError):
        verdict.listing([])
    diffs = {"vocals": 0.5, "bass": -0.2, "drums": 0.01, "other": math.nan}
    assert verdict.changes({k: diffs[k] for k in ("vocals", "bass", "drums")}) == (
        "vocals improves by 0.50 dB, bass loses 0.20 dB and drums changes by less than 0.1 dB")
    assert verdict.gained_lost(diffs) == (["vocals"], ["bass"])
