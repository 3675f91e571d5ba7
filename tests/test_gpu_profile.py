"""The GPU reader's path: the preface says, per chapter, whether its GPU time is measured or estimated."""


def test_preface_gpu_column_says_measured_or_estimated():
    from flowsep import book_build
    titles = {"01_a": "First", "04_b": "Fourth"}
    cpu = {"profile": "cpu", "machine": "2 CPU cores without a GPU",
           "chapters": {"01_a": {"seconds": 30.0, "status": "ok"}, "04_b": {"seconds": 300.0, "status": "ok"}}}
    md = book_build.timings_markdown(cpu, titles)
    assert md.count("estimated (FLOP count, no GPU measurement yet)") == 2 and "measured" not in md.replace(
        "no GPU measurement", "")
    gpu = dict(cpu, profile="gpu", machine="2 CPU cores with a Tesla T4 GPU")
    md = book_build.timings_markdown(gpu, titles)
    assert "| Fourth | 5.0 min | 5.0 min measured (this build) |" in md and "estimated" not in md
