"""The book: every chapter runs at the smoke profile and renders with strict warnings; the sources are clean.

The build itself (``built_book`` in conftest.py, shared with test_browser.py) executes every chapter
of _toc.yml with papermill and renders the HTML once per test session.
"""
import ast
import json
import math
from pathlib import Path

import nbformat
import pytest

from flowsep import book_build
from flowsep.errors import FlowsepError

ROOT = book_build.find_root()
CHAPTERS = book_build.chapters(ROOT)
IDS = [p.stem for p in CHAPTERS]
REQUIRED_PARAMETERS = {"PROFILE", "DATASET", "DEVICE", "SEED"}


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


# ---- the sources -------------------------------------------------------------------------------------
def test_toc_lists_every_chapter_notebook():
    on_disk = sorted((ROOT / "book").glob("*.ipynb"))
    assert CHAPTERS, "_toc.yml lists no chapter notebook"
    assert sorted(CHAPTERS) == on_disk, "every book/*.ipynb must be in _toc.yml, and only those"
    assert book_build.toc_files(ROOT)[0] == "book/intro"


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_committed_notebook_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in code_cells(nb):
        assert cell.outputs == [], f"{path.name}: a cell has outputs; run `make strip`"
        assert cell.execution_count is None, f"{path.name}: a cell has an execution count; run `make strip`"
    assert nb.metadata.kernelspec.name == "python3"
    assert "widgets" not in nb.metadata and "papermill" not in nb.metadata


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_one_parameters_cell_with_the_book_parameters(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters' (need exactly one)"
    assert tagged[0].cell_type == "code"
    names = {t.id: node.value for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name)}
    missing = REQUIRED_PARAMETERS - set(names)
    assert not missing, f"{path.name}: the parameters cell lacks {sorted(missing)}"
    assert ast.literal_eval(names["PROFILE"]) == "cpu"
    assert ast.literal_eval(names["DATASET"]) == ""


def exercise_labels(nb):
    """(exercise labels, solution targets, code cells inside gated solutions) of a chapter."""
    import re

    exercises, solutions, inside, gated_code = [], [], False, 0
    for cell in nb.cells:
        text = cell.source
        if cell.cell_type == "markdown":
            exercises += re.findall(r"\{exercise\}\s*\n:label: (\S+)", text)
            solutions += re.findall(r"\{solution(?:-start)?\} (\S+)", text)
            if "{solution-start}" in text:
                inside = True
            if "{solution-end}" in text:
                inside = False
        elif inside:
            gated_code += 1
    return exercises, solutions, gated_code


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_exercises_with_solutions(path):
    nb = nbformat.read(path, as_version=4)
    starts = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "## Exercises" in c.source]
    assert starts, f"{path.name}: no '## Exercises' section"
    assert any("## Summary" in c.source for c in nb.cells[:starts[0] + 1]), f"{path.name}: no summary"
    assert "In this chapter" in nb.cells[0].source, f"{path.name}: no objectives at the top"
    exercises, solutions, _ = exercise_labels(nb)
    number = int(path.stem[:2])
    assert exercises, f"{path.name}: no {{exercise}} directives"
    assert all(label.startswith(f"ex-ch{number}-") for label in exercises), (path.name, exercises)
    assert len(set(exercises)) == len(exercises), f"{path.name}: duplicate exercise labels"
    assert set(solutions) <= set(exercises), f"{path.name}: a solution of no exercise: {set(solutions) - set(exercises)}"
    assert set(solutions) == set(exercises), f"{path.name}: exercises without solutions: {set(exercises) - set(solutions)}"
    for cell in nb.cells[starts[0]:]:
        assert "{dropdown} Solution" not in cell.source and "# @title Solution" not in cell.source, path.name


def _student_notebook():
    nb = nbformat.v4.new_notebook()
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    nb.cells = [md("## Exercises"), md("````{exercise}\n:label: ex-ch9-1\n\nAdd two numbers.\n````"),
                md("```{solution-start} ex-ch9-1\n:class: dropdown\n```"), code("print(1 + 1)  # SECRET"),
                md("```{solution-end}\n```"),
                md("````{exercise}\n:label: ex-ch9-2\n\nWhy?\n````"),
                md("```{solution} ex-ch9-2\nBecause SECRET.\n```"), code("x = 'kept'")]
    return nb


def test_student_edition_drops_the_solutions_with_code():
    nb = book_build.student_edition(_student_notebook())
    text = "\n".join(c.source for c in nb.cells)
    assert "print(1 + 1)" not in text and "solution-start" not in text and "solution-end" not in text
    assert "ex-ch9-1" in text and "x = 'kept'" in text
    # a {solution} directive stays in the notebook: Sphinx's hide_solutions removes it when rendering
    assert "{solution} ex-ch9-2" in text
    broken = _student_notebook()
    del broken.cells[4]
    with pytest.raises(FlowsepError, match="solution-end"):
        book_build.student_edition(broken)


def test_hide_solutions_reaches_sphinx(tmp_path, monkeypatch):
    import yaml

    seen = {}
    monkeypatch.setattr(book_build, "build", lambda *a, **kw: seen.update(kw) or {})
    assert book_build.main(["--profile", "smoke", "--hide-solutions", "--out", str(tmp_path / "_b")]) == 0
    assert seen["hide_solutions"] is True
    assert book_build.main(["--profile", "smoke", "--out", str(tmp_path / "_b")]) == 0
    assert seen["hide_solutions"] is False
    (tmp_path / "_config.yml").write_text((ROOT / "_config.yml").read_text())
    config = yaml.safe_load((tmp_path / "_config.yml").read_text())
    assert "sphinx_exercise" in config["sphinx"]["config"]["extensions"]
    assert config["sphinx"]["config"].get("hide_solutions") is False
    book_build._hide_solutions(tmp_path)
    assert yaml.safe_load((tmp_path / "_config.yml").read_text())["sphinx"]["config"]["hide_solutions"] is True
    make = (ROOT / "Makefile").read_text()
    assert "--hide-solutions" in make and "HIDE_SOLUTIONS" in make


@pytest.mark.slow
def test_student_edition_renders_without_solution_text(tmp_path):
    """A one-page book with both kinds of solution, rendered by Jupyter Book as the student edition."""
    import shutil

    src = tmp_path / "src"
    (src / "book").mkdir(parents=True)
    shutil.copy2(ROOT / "_config.yml", src / "_config.yml")
    shutil.copy2(ROOT / "book" / "references.bib", src / "book" / "references.bib")
    (src / "_toc.yml").write_text("format: jb-book\nroot: book/page\n")
    nb = _student_notebook()
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("# A page"))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(book_build.student_edition(nb), src / "book" / "page.ipynb")
    book_build._hide_solutions(src)
    html = book_build.render(src, tmp_path / "out", strict=True)
    page = (html / "book" / "page.html").read_text()
    assert "Add two numbers" in page and "Why?" in page
    assert "SECRET" not in page and "1 + 1" not in page
    shutil.rmtree(tmp_path / "out", ignore_errors=True)


# ---- book_build without a build ----------------------------------------------------------------------
def test_select_chapters_by_number_name_or_path():
    first = CHAPTERS[0]
    assert book_build.select(CHAPTERS, None) == CHAPTERS
    assert book_build.select(CHAPTERS, [first.stem.split("_")[0]]) == [first]
    assert book_build.select(CHAPTERS, [str(first)]) == [first]
    with pytest.raises(FlowsepError, match="no chapter"):
        book_build.select(CHAPTERS, ["99_no_such_chapter"])


def test_build_refuses_an_unknown_profile(tmp_path):
    with pytest.raises(FlowsepError, match="unknown profile"):
        book_build.build("huge", out=tmp_path / "_build")
    assert book_build.main(["--profile", "huge", "--out", str(tmp_path / "_build")]) == 2


def _tqdm_like_notebook():
    """A notebook with one widget output shaped like tqdm's (HBox of HTML, FloatProgress, HTML)."""
    def model(name, state):
        return {"model_name": name, "model_module": "@jupyter-widgets/controls", "state": state}

    state = {
        "box": model("HBoxModel", {"children": ["IPY_MODEL_left", "IPY_MODEL_bar", "IPY_MODEL_right"]}),
        "left": model("HTMLModel", {"value": "train vocals: 100%"}),
        "bar": model("FloatProgressModel", {"value": 60, "max": 60, "bar_style": "success"}),
        "right": model("HTMLModel", {"value": " 60/60 [00:02&lt;00:00]"}),
        "slider": model("IntSliderModel", {"value": 3}),
        "gone": model("HBoxModel", {"children": ["IPY_MODEL_left", "IPY_MODEL_bar", "IPY_MODEL_right"],
                                    "layout": "IPY_MODEL_hidden"}),
        "hidden": model("LayoutModel", {"visibility": "hidden"}),
    }
    nb = nbformat.v4.new_notebook()
    view = "application/vnd.jupyter.widget-view+json"
    outputs = [nbformat.v4.new_output("display_data", data={view: {"model_id": m, "version_major": 2},
                                                             "text/plain": "widget"}) for m in ("box", "slider", "gone")]
    nb.cells = [nbformat.v4.new_code_cell("x", outputs=outputs)]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": state}}
    return nb


def test_widgets_become_static_html():
    nb = book_build.staticize_widgets(_tqdm_like_notebook())
    (slider,) = (o["data"] for o in nb.cells[0].outputs)  # progress bars are gone, the hidden one too
    assert "widgets" not in nb.metadata
    assert "application/vnd.jupyter.widget-view+json" not in slider
    assert "interactive" in slider["text/html"]


def test_bookkeeping_statements_leave_the_shown_code():
    source = ("x = 1  # kept\n"
              "# the number for the text\n"
              "glue('x', x)\n"
              "assert x > 0, 'positive'\n"
              "y = x + 1\n"
              "for k in (1, 2):\n"
              "    glue(f'k{k}', k)\n"
              "glue('y', y)\n"
              "if y > 1:\n"
              "    assert y == 2\n"
              "y = 5\n"
              "print(y)")
    shown, kept = book_build.split_bookkeeping(source)
    # glue('y', y) stays: y changes after it, so run later it would glue another value
    assert shown == "x = 1  # kept\ny = x + 1\nglue('y', y)\nif y > 1:\n    assert y == 2\ny = 5\nprint(y)"
    assert book_build.split_bookkeeping("z = 3\nif z:\n    assert z == 3") == ("z = 3", "if z:\n    assert z == 3")
    assert kept == ("# the number for the text\nglue('x', x)\nassert x > 0, 'positive'\n"
                    "for k in (1, 2):\n    glue(f'k{k}', k)")   # the if reads y, which changes after it
    assert book_build.split_bookkeeping("glue('a', 1)") == ("", "glue('a', 1)")
    loop = "glue('all', [s for s in 'ab'])\nfor s in 'cd':\n    print(s)"   # s of the glue is its own
    assert book_build.split_bookkeeping(loop) == ("for s in 'cd':\n    print(s)", "glue('all', [s for s in 'ab'])")
    assert book_build.split_bookkeeping("a = (") == ("a = (", "")   # not Python: left alone


def test_the_page_leaves_the_machinery_off():
    new = nbformat.v4
    cells = [new.new_code_cell(book_build.colab_cell("https://x/y", "main")),
             new.new_code_cell("PROFILE = 'cpu'", metadata={"tags": ["parameters"]}),
             new.new_code_cell("PROFILE = 'smoke'", metadata={"tags": ["injected-parameters"]}),
             new.new_markdown_cell("Text."),
             new.new_code_cell("r = 2\nglue('r', r)\nprint(r)", outputs=[
                 new.new_output("stream", name="stdout", text="2\n"),
                 new.new_output("stream", name="stderr", text="train: 100%|##| 60/60\n")]),
             new.new_code_cell("assert True")]
    nb = book_build.present(new.new_notebook(cells=cells))
    removed = ["remove-cell" in c.metadata.get("tags", []) for c in nb.cells]
    assert removed == [True, True, True, False, False, True, True]
    shown = nb.cells[4]
    assert shown.source == "r = 2\nprint(r)" and nb.cells[5].source == "glue('r', r)"
    assert [o["name"] for o in shown.outputs] == ["stdout"]


# ---- what the chapters show (flowsep.widgets, flowsep.plots, flowsep.analysis) --------------------------
def _wav_from_tag(tag: str):
    import base64
    import io
    import re

    import soundfile as sf
    uri = re.search(r'src="data:audio/wav;base64,([^"]+)"', tag).group(1)
    return sf.read(io.BytesIO(base64.b64decode(uri)), always_2d=True)


def test_players_keep_levels_and_channels():
    import numpy as np

    from flowsep import widgets
    t = np.arange(8000) / 8000
    quiet = np.stack([0.05 * np.sin(2 * np.pi * 220 * t), 0.02 * np.sin(2 * np.pi * 330 * t)])
    data, rate = _wav_from_tag(widgets.audio_tag(quiet, 8000))
    assert rate == 8000 and data.shape == (8000, 2)
    assert np.allclose(data.max(0), quiet.max(1), atol=2 / 32768), "levels must not be normalised"
    loud = widgets.audio_tag(40 * quiet[0], 8000)
    assert "turned down" in loud and np.abs(_wav_from_tag(loud)[0]).max() <= 1.0
    data, rate = _wav_from_tag(widgets.audio_tag(np.zeros(44100 * 2), 44100, seconds=1.0))
    assert rate == widgets.MAX_RATE and len(data) == widgets.MAX_RATE


def test_a_silent_player_says_so():
    import numpy as np

    from flowsep import widgets
    tone = 0.1 * np.sin(np.arange(16000) / 5)
    late = np.concatenate([np.zeros(16000), tone])           # silent over the first second only
    page = widgets.players({"tone": tone, "late": late}, 16000, seconds=1.0).data
    assert page.count("(silent here)") == 1 and page.index("(silent here)") > page.index("late")
    assert "(silent here)" not in widgets.players({"late": late}, 16000).data


def test_a_table_of_sentences_wraps_and_rounds():
    import pandas as pd

    from flowsep import widgets
    page = widgets.text_table(pd.DataFrame({"value": [7.14159], "reason": ["a long reason " * 30]}),
                              max_width="20em", caption="the claims")._repr_html_()
    assert "max-width: 20em" in page and "white-space: normal" in page and 'class="dataframe"' in page
    assert ">7.14<" in page and "7.1415" not in page and "the claims</caption>" in page


def test_a_table_has_its_caption_and_keeps_its_data():
    import pandas as pd

    from flowsep import widgets
    frame = pd.DataFrame({"SDR": [4.55123, -1.0]}, index=["vocals", "bass"])
    page = widgets.table(frame, "SDR per target", precision=1).to_html()
    assert "SDR per target</caption>" in page and ">4.6<" in page and 'class="dataframe"' in page
    assert frame.loc["vocals", "SDR"] == 4.55123   # shown rounded, not rounded
    with pytest.raises(FlowsepError):
        widgets.table(frame, "")


def test_audio_grid_has_a_player_per_cell_and_a_dash_for_missing():
    import numpy as np

    from flowsep import widgets
    x = 0.1 * np.ones(800)
    html = widgets.audio_grid({"reference": {"vocals": x, "bass": x}, "system": {"vocals": (x, 4000)}},
                              rate=8000).data
    assert html.count("<audio") == 3 and html.count("&ndash;") == 1
    assert html.index(">vocals<") < html.index(">bass<")
    with pytest.raises(FlowsepError):
        widgets.audio_grid({"row": {"a": x}})  # no rate anywhere
    six = {f"t{k}": x for k in range(6)}
    wrapped = widgets.audio_grid({"a": six, "b": six}, rate=8000, caption="six targets").data
    assert wrapped.count("<table") == 2 and wrapped.count("<audio") == 12 and wrapped.count("<caption") == 1
    second = wrapped.index("<table", wrapped.index("<table") + 1)
    assert wrapped.index(">t3<") < second < wrapped.index(">t4<")


def test_no_figure_text_below_the_book_style():
    """Figures keep BOOK_STYLE's sizes: nothing in the chapters or flowsep/ asks for smaller text (the
    rendered pages' figure widths are checked against them in test_browser.py)."""
    import re

    from flowsep import plots
    smallest = min(v for k, v in plots.BOOK_STYLE.items() if k.endswith("size"))
    sources = {p: p.read_text() for p in [*(ROOT / "flowsep").rglob("*.py"), *CHAPTERS]}
    small = [(p.name, m.group(0)) for p, text in sources.items()
             for m in re.finditer(r"(?:fontsize|labelsize|size)\s*=\s*(\d+(?:\.\d+)?)\b", text)
             if "font" in m.group(0) or "label" in m.group(0) if float(m.group(1)) < smallest]
    assert not small, f"text smaller than BOOK_STYLE's {smallest} pt: {small}"


def test_likelihood_matrix_scores_every_prior_on_every_source():
    import torch

    from flowsep import FlowPrior, PriorConfig, analysis
    torch.manual_seed(0)
    cfg = PriorConfig.preset("smoke")
    priors = {"a": FlowPrior(cfg).eval(), "b": FlowPrior(cfg).eval()}
    clips = {"a": 0.1 * torch.randn(3, 1000), "b": 0.01 * torch.randn(2, 1000), "c": torch.zeros(2, 1000)}
    m = analysis.likelihood_matrix(priors, clips)
    assert list(m.index) == ["a", "b"] and list(m.columns) == ["a", "b", "c"]
    with torch.no_grad():
        direct = float(priors["b"].bits_per_dim(analysis.magnitudes(clips["a"], cfg)).mean())
    assert abs(m.loc["b", "a"] - direct) < 1e-4
    assert set(analysis.diagonal_wins(m)) == {"a", "b"}


def test_autograd_logdet_of_a_linear_map():
    import torch

    from flowsep.analysis import autograd_logdet
    w = torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    ld = autograd_logdet(lambda v: torch.einsum("ij,bjt->bit", w, v), x)
    expected = torch.full((3,), 4 * math.log(6.0), dtype=torch.float64)  # T * log|det w|
    assert torch.allclose(ld, expected)


# ---- the build (session fixture) ---------------------------------------------------------------------
@pytest.mark.slow
def test_every_chapter_executed(built_book):
    for path in built_book.chapters:
        entry = built_book.timings["chapters"].get(path.stem)
        assert entry and entry["status"] == "ok", f"{path.stem} did not execute: {entry}"
        nb = nbformat.read(built_book.out / "executed" / path.name, as_version=4)
        assert nb.metadata.papermill["parameters"]["PROFILE"] == "smoke"
        for cell in code_cells(nb):
            assert cell.execution_count is not None, f"{path.stem}: a cell was not executed"
            assert all(o.output_type != "error" for o in cell.outputs), f"{path.stem}: a cell failed"
        assert any(o.get("output_type") == "display_data" and any(k.startswith("image/") for k in o.get("data", {}))
                   for c in code_cells(nb) for o in c.outputs), f"{path.stem}: no figure was drawn"


@pytest.mark.slow
def test_html_for_every_page(built_book):
    assert (built_book.html / "index.html").is_file()
    for entry in book_build.toc_files(built_book.root):
        page = built_book.html / f"{entry}.html"
        assert page.is_file(), f"no HTML for {entry}"
    for path in built_book.chapters:
        text = (built_book.html / "book" / f"{path.stem}.html").read_text()
        assert "widget-view+json" not in text, f"{path.stem}: a widget output was left for a static page"
        assert "colab.research.google.com" in text, f"{path.stem}: no Colab launch button"


@pytest.mark.slow
def test_executed_copies_stay_out_of_the_sources(built_book):
    for path in built_book.chapters:
        nb = nbformat.read(path, as_version=4)
        assert all(c.outputs == [] for c in code_cells(nb)), f"the build wrote outputs into {path}"


@pytest.mark.slow
def test_timings_are_recorded(built_book):
    timings = json.loads((built_book.out / "timings.json").read_text())
    assert timings["profile"] == "smoke"
    assert set(timings["chapters"]) == {p.stem for p in built_book.chapters}
    assert all(c["seconds"] > 0 for c in timings["chapters"].values())
    # run alone from nothing, a chapter costs at least what it cost in sequence, and a chapter that reused
    # what an earlier one made (chapter 5: chapter 4's priors) costs more
    for stem, c in timings["chapters"].items():
        assert c["alone_seconds"] is not None and c["alone_seconds"] >= c["seconds"], stem
    five = next(c for s, c in timings["chapters"].items() if s.startswith("05"))
    assert five["alone_seconds"] > five["seconds"] + 1.0
    assert timings["html_seconds"] > 0
    assert "CPU cores" in timings["machine"]


@pytest.mark.slow
def test_preface_shows_the_timings_of_the_build_that_rendered_it(built_book):
    text = (built_book.html / "book" / "intro.html").read_text()
    assert book_build.TIMINGS_MARKER not in text
    assert "This copy of the book was rendered at the" in text and "<code class" in text
    for path in built_book.chapters:
        title = book_build._chapter_title(path)
        assert title in text, f"the preface's build table lacks {title!r}"


def test_timings_markdown_lists_each_chapter_with_its_time():
    timings = {"profile": "cpu", "machine": "2 CPU cores without a GPU",
               "chapters": {"01_a": {"seconds": 30.0, "status": "ok", "alone_seconds": 30.0},
                            "02_b": {"seconds": 600.0, "status": "reused", "alone_seconds": 900.0},
                            "04_d": {"seconds": 60.0, "status": "ok"}}}
    md = book_build.timings_markdown(timings, {"01_a": "First", "02_b": "Second", "03_c": "Not run",
                                               "04_d": "Older build"})
    assert "`cpu` profile on 2 CPU cores without a GPU" in md
    assert "| First | 30 s | 30 s |" in md and "| Second | 10.0 min (earlier run) | 15.0 min |" in md
    assert "| Older build | 60 s | not recorded |" in md
    assert "Not run" not in md and "| all chapters | 11.5 min | |" in md


def test_a_chapter_alone_from_nothing_adds_the_making_of_what_it_reused(tmp_path, monkeypatch):
    """The worklog: making and reusing are logged, making times kept, and a chapter's alone time adds up."""
    from flowsep import worklog
    monkeypatch.setenv("FLOWSEP_DATA", str(tmp_path / "data"))
    log = tmp_path / "ch.worklog"
    monkeypatch.setenv(worklog.ENV, str(log))
    with worklog.making(tmp_path / "data" / "set"):
        pass
    worklog.reusing(tmp_path / "data" / "priors" / "a.pt")
    used = worklog.uses(log)
    assert used == [{"key": "set", "made": True}, {"key": str(Path("priors") / "a.pt"), "made": False}]
    made = worklog.made_seconds()
    assert set(made) == {"set"} and made["set"] >= 0
    # the reused prior's making time is not known: no estimate rather than a wrong one
    assert worklog.alone_seconds(10.0, used, made) is None
    made[str(Path("priors") / "a.pt")] = 30.0
    assert worklog.alone_seconds(10.0, used, made) == 40.0          # what it made itself is in its own 10 s
    assert worklog.alone_seconds(10.0, [], made) == 10.0
    monkeypatch.delenv(worklog.ENV)
    worklog.reusing(tmp_path / "data" / "set")                       # no log asked for: nothing written
    assert len(worklog.uses(log)) == 2


def test_a_large_figure_is_stored_with_a_palette():
    import base64
    import io

    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 255, (700, 1000, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    big = buf.getvalue()
    assert len(big) > book_build.MAX_PNG_BYTES
    small = book_build.lighter_png(big)
    assert len(small) < len(big) and Image.open(io.BytesIO(small)).size == (1000, 700)
    tiny = book_build.lighter_png(big[:100])
    assert tiny == big[:100]   # under the limit: untouched
    cell = nbformat.v4.new_code_cell("fig", outputs=[nbformat.v4.new_output(
        "display_data", data={"image/png": base64.b64encode(big).decode(), "text/plain": "<Figure>"})])
    book_build.present(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("## 5.5 Snapshots"), cell]))
    assert base64.b64decode(cell.outputs[0]["data"]["image/png"]) == small
    # every figure has an alternative text: its titles, else its section; never the file's name
    assert cell.metadata["mystnb"]["image"]["alt"] == "Figure of the section 5.5 Snapshots"
    code = 'ax.set(title="the separation objective")\nfig.suptitle(f"step {k}")\nplots.curves(h, title=\'loss\')'
    assert book_build.figure_alt(code, "x") == "Figure: the separation objective; loss"
    heading = "## 3.2 Invertible $1\\times1$ convolution\n```python\n# not a heading\n```"
    assert book_build._plain_heading(heading, "before") == "3.2 Invertible 1×1 convolution"
    assert book_build._plain_heading("No heading here.", "before") == "before"
