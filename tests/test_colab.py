"""Colab, the second way readers run the book: the first cell of every chapter, and the chapters' numbers
where MyST markup cannot show them.

The simulation (slow): a fresh virtual environment that downloads nothing (no pip of its own, and this
environment's packages on its path after its own site-packages, as Colab's preinstalled ones are), a
stand-in ``google.colab`` module, and the rendered copy's first cell pointed at a ``file://`` clone of
this repository at its HEAD commit. The cell clones, checks out and pip-installs flowsep there with the
pins of constraints.txt (``PIP_NO_INDEX``: anything missing fails instead of downloading); then each
chapter's parameters cell and the imports of its first cell after it run in that environment.
"""
import ast
import os
import subprocess
import sys
import sysconfig
import textwrap
import types

import nbformat
import pytest

from flowsep import book_build, widgets

ROOT = book_build.find_root()
CHAPTERS = book_build.chapters(ROOT)
IDS = [p.stem for p in CHAPTERS]


def code_cells(path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def parameters_index(cells) -> int:
    return next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))


def imports_of(source: str) -> str:
    """The import statements at the top level of a cell (what it needs installed), as source."""
    return "\n".join(ast.unparse(node) for node in ast.parse(source).body
                     if isinstance(node, (ast.Import, ast.ImportFrom)))


# ---- the cell as committed and as rendered ----------------------------------------------------------
@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_first_cell_installs_from_the_repository_of_config(path):
    url, branch = book_build.repository(ROOT)
    source = code_cells(path)[0].source
    assert source == book_build.colab_cell(url, branch), (
        f"{path.name}: the first cell is not the Colab cell of _config.yml's repository ({url}, {branch}); "
        "rewrite it with: python -c 'from flowsep.book_build import write_colab_cells; write_colab_cells()'")
    assert "constraints.txt" in source and "cannot be reached" in source


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_first_cell_does_nothing_outside_colab(path, monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(code_cells(path)[0].source, f"{path.name}[first cell]", "exec"), {})
    assert calls == []


def test_rendered_copy_installs_the_commit_that_rendered_it():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(book_build.colab_cell("https://x/y", "main")),
                                         nbformat.v4.new_code_cell("PROFILE = 'cpu'")])
    book_build.pin_colab_cell(nb, "https://x/y", "0123abcd" * 5)
    assert f'REF = "{"0123abcd" * 5}"' in nb.cells[0].source and 'REPOSITORY = "https://x/y"' in nb.cells[0].source
    assert nb.cells[1].source == "PROFILE = 'cpu'"
    assert book_build.commit(ROOT) and len(book_build.commit(ROOT)) == 40


# ---- numbers that the text quotes with {glue} -------------------------------------------------------
def test_glue_prints_the_value_where_the_text_cannot_show_it(monkeypatch, capsys):
    import numpy as np
    import torch

    monkeypatch.delenv(book_build.BOOK_BUILD_ENV, raising=False)
    widgets.glue("sdr", np.float32(4.55123))
    widgets.glue("steps", 150)
    widgets.glue("ratio", torch.tensor(0.307123))
    assert capsys.readouterr().out.splitlines() == ["sdr = 4.551", "steps = 150", "ratio = 0.3071"]


def test_glue_stores_for_the_text_during_the_book_build(monkeypatch, capsys):
    import myst_nb

    stored = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=False: stored.append((name, value)))
    monkeypatch.setenv(book_build.BOOK_BUILD_ENV, "1")
    widgets.glue("sdr", 4.5)
    assert stored == [("sdr", 4.5)] and capsys.readouterr().out == ""


# ---- the simulation ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """A Colab-like environment after the first cell ran: (python, environment variables, work folder)."""
    tmp = tmp_path_factory.mktemp("colab")
    origin = tmp / "origin"   # the repository as Colab would fetch it, at this checkout's HEAD
    subprocess.run(["git", "clone", "-q", "--no-local", str(ROOT), str(origin)], check=True, timeout=300)
    ref = subprocess.run(["git", "-C", str(origin), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the preinstalled packages (this environment's, flowsep's editable install not among them: its .pth
    # files are not processed), after the new environment's own site-packages
    with open(os.path.join(site, "preinstalled.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    stub = tmp / "stub" / "google" / "colab"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('"""A stand-in for Colab\'s module: its presence means "on Colab"."""\n')
    work = tmp / "content"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp / "stub"), "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1"}
    env.pop(book_build.BOOK_BUILD_ENV, None)
    cell = book_build.colab_cell(f"file://{origin}", ref)   # what the rendered copy holds, another URL
    script = textwrap.dedent("""
        import google.colab, sys
        exec(compile(sys.stdin.read(), "first cell", "exec"), {})
        import flowsep
        print("FLOWSEP", flowsep.__file__)
    """)
    proc = subprocess.run([str(python), "-c", script], input=cell, capture_output=True, text=True, env=env,
                          cwd=work, timeout=900)
    assert proc.returncode == 0, f"the Colab cell failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    where = proc.stdout.split("FLOWSEP", 1)[1].strip()
    assert where.startswith(str(venv)), f"flowsep imported from {where}, not from the Colab environment"
    head = subprocess.run(["git", "-C", str(work / "flowsep-src"), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert head == ref, "the cell did not install the commit it names"
    return python, env, work


@pytest.mark.slow
def test_colab_cell_reports_an_unreachable_repository(colab, tmp_path):
    python, env, _ = colab
    cell = book_build.colab_cell(f"file://{tmp_path}/no-such-repository", "main")
    proc = subprocess.run([str(python), "-c", "import google.colab, sys; exec(sys.stdin.read(), {})"],
                          input=cell, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0 and "set REPOSITORY to a copy you can reach" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_chapter_first_cells_run_on_colab(path, colab):
    python, env, work = colab
    cells = code_cells(path)
    p = parameters_index(cells)
    assert p == 1, f"{path.name}: the parameters cell should follow the Colab cell"
    source = "\n".join([cells[p].source, 'PROFILE = "smoke"', imports_of(cells[p + 1].source),
                        "import flowsep, sys",
                        "assert flowsep.__file__.startswith(sys.prefix), flowsep.__file__",
                        "from flowsep.widgets import glue",
                        "glue('a_number', 4.55123)"])
    proc = subprocess.run([str(python), "-c", "import google.colab, sys; exec(sys.stdin.read(), {})"],
                          input=source, capture_output=True, text=True, env=env, cwd=work, timeout=600)
    assert proc.returncode == 0, f"{path.name} on Colab:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "a_number = 4.551" in proc.stdout, "glue must print its value on Colab"
