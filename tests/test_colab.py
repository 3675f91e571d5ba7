"""Colab, the second way readers run the book: the first cell of every chapter, how it installs flowsep
(flowsep/colab_setup.py), and the chapters' numbers where MyST markup cannot show them.

The simulation (slow; tests/colab_sim.py builds it): Colab's published stack (tests/data/colab_stack.txt:
Python 3.13, torch 2.11, numpy 2.1, pandas 2.2, IPython 7, ipywidgets 7, ...) preinstalled, a kernel
that has imported google.colab, numpy, pandas and matplotlib before the first cell, and the rendered
copy's first cell pointed at a ``file://`` clone of this repository at its HEAD commit. The cell installs
from the package registry as it does on Colab, with no pip cache; then every chapter runs top to bottom at the smoke
profile, each on a fresh kernel in an empty working folder. Its times and install list are written to
``_build/colab-simulation/report.json``.
"""
import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from flowsep import book_build, colab_setup, widgets

sys.path.insert(0, str(Path(__file__).parent))
import colab_sim  # noqa: E402

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
    assert "colab_setup.py" in source and "cannot be reached" in source


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


# ---- how the cell installs: flowsep/colab_setup.py ------------------------------------------------
def test_constraints_hold_what_is_installed_and_pin_what_is_missing(tmp_path):
    pins = tmp_path / "constraints.txt"
    pins.write_text("numpy==2.4.6\nmuseval==0.4.1  # scoring\nPyYAML==6.0.4\ntorch==2.9.1\nflowsep==0.0.1\n\n")
    present = {"numpy": "2.1.3", "pyyaml": "6.0.3", "torch": "2.11.0+cu128", "flowsep": "0.1.0"}
    lines = colab_setup.constraints(pins, present)
    assert lines == ["numpy==2.1.3", "pyyaml==6.0.3", "torch==2.11.0+cu128", "museval==0.4.1"]


def test_restart_is_needed_only_for_an_imported_package_that_changed():
    before = {"numpy": "2.1.3", "pytest": "1.0", "flowsep-nowhere": "1"}
    assert colab_setup.restart_needed(before, dict(before)) == []
    assert colab_setup.restart_needed(before, {**before, "numpy": "2.4.6"}, modules={"numpy.linalg": 1}) == ["numpy"]
    assert colab_setup.restart_needed(before, {**before, "numpy": "2.4.6"}, modules={"json": 1}) == []
    assert colab_setup.restart_needed(before, {"pytest": "1.0"}, modules={"numpy": 1}) == ["numpy"]   # removed


def test_restart_is_said_in_one_line():
    error = colab_setup.RestartNeeded("pip changed numpy, already imported: restart the session")
    assert error._render_traceback_() == ["flowsep: pip changed numpy, already imported: restart the session"]


def test_install_of_another_commit_over_an_imported_flowsep_asks_for_a_restart(monkeypatch, tmp_path):
    monkeypatch.setattr(colab_setup, "installed_commit", lambda: "0" * 40)   # another commit, imported here
    monkeypatch.setattr(colab_setup, "_ensure_fluidsynth", lambda run: None)
    (tmp_path / "constraints.txt").write_text("")

    def run(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 0, stdout="1" * 40 + "\n")

    with pytest.raises(colab_setup.RestartNeeded, match="pip changed flowsep"):
        colab_setup.install(tmp_path, run=run)


def test_a_failing_pip_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(colab_setup, "installed_commit", lambda: None)
    monkeypatch.setattr(colab_setup, "_ensure_fluidsynth", lambda run: None)
    (tmp_path / "constraints.txt").write_text("")

    def run(cmd, **kw):
        if "pip" in cmd:
            raise subprocess.CalledProcessError(1, cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="1" * 40 + "\n")

    with pytest.raises(colab_setup.InstallFailed) as failed:
        colab_setup.install(tmp_path, run=run)
    assert len(failed.value._render_traceback_()) == 1 and "colab-constraints.txt" in str(failed.value)


def test_install_does_nothing_when_installed_at_the_commit(monkeypatch, tmp_path):
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="c0ffee" * 6 + "abcd\n")

    monkeypatch.setattr(colab_setup, "installed_commit", lambda: "c0ffee" * 6 + "abcd")
    assert colab_setup.install(tmp_path, run=run) == "flowsep c0ffeec0ff is installed"
    assert len(calls) == 1 and calls[0][-2:] == ["rev-parse", "HEAD"]


# ---- the simulation ---------------------------------------------------------------------------------
REPORT = ROOT / "_build" / "colab-simulation"


def _versions(python) -> dict[str, str]:
    code = ("import importlib.util, json, sys; spec = importlib.util.spec_from_file_location('s', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); print(json.dumps(m.installed()))")
    out = subprocess.run([str(python), "-c", code, colab_setup.__file__], capture_output=True, text=True,
                         check=True, cwd=Path(python).parent).stdout   # not here: the checkout is on the path
    return json.loads(out)


def _execute(path, dest, cwd, env, parameters=None):
    """Run a notebook on a fresh simulated-Colab kernel; (seconds, the executed notebook)."""
    import papermill as pm

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    os.environ.pop(book_build.BOOK_BUILD_ENV, None)
    os.environ.pop("FLOWSEP_DATA", None)
    start = time.perf_counter()
    try:
        nb = pm.execute_notebook(str(path), str(dest), parameters=parameters or {}, kernel_name=colab_sim.KERNEL_NAME,
                                 cwd=str(cwd), progress_bar=False, log_output=False)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return time.perf_counter() - start, nb


def _cell_seconds(cell) -> float:
    return round(cell.metadata.get("papermill", {}).get("duration") or 0.0, 1)


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """Colab after a reader ran a chapter's first cell: a namespace with the runtime's python, the kernel's
    environment, the first cell (pointed at a clone of HEAD) and what the install did."""
    from types import SimpleNamespace

    tmp = tmp_path_factory.mktemp("colab")
    base = colab_sim.base_environment()
    python = colab_sim.runtime_environment(base, tmp / "runtime")
    # Colab starts with an empty pip cache: the first cell downloads what it installs
    env = {**colab_sim.kernel(python, tmp), "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1"}
    origin = tmp / "origin"   # the repository as Colab would fetch it, at this checkout's HEAD
    subprocess.run(["git", "clone", "-q", "--no-local", str(ROOT), str(origin)], check=True, timeout=300)
    ref = book_build.commit(origin)
    cell = book_build.colab_cell(f"file://{origin}", ref)   # what the rendered copy holds, another URL

    preinstalled = _versions(base / "bin" / "python")
    first = tmp / "first-cell.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)],
                                            metadata={"kernelspec": {"name": colab_sim.KERNEL_NAME,
                                                                     "language": "python", "display_name": "Colab"}}),
                   first)
    (tmp / "content").mkdir()
    REPORT.mkdir(parents=True, exist_ok=True)
    seconds, nb = _execute(first, REPORT / "first-cell.ipynb", tmp / "content", env)
    after = _versions(python)
    installed = {name: v for name, v in after.items() if name not in preinstalled}
    changed = {name: (v, after.get(name)) for name, v in preinstalled.items() if after.get(name) != v}
    output = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    report = {"stack": str(colab_sim.STACK.relative_to(ROOT)), "commit": ref, "first_cell_seconds": round(seconds, 1),
              "first_cell_output": output.strip(), "installed": installed, "changed": changed, "chapters": {}}
    (REPORT / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return SimpleNamespace(python=python, env=env, cell=cell, ref=ref, origin=origin, tmp=tmp, report=report,
                           preinstalled=preinstalled, base=base)


@pytest.mark.slow
def test_first_cell_installs_flowsep_and_changes_nothing_colab_ships(colab):
    assert colab.report["changed"] == {}, f"the first cell changed Colab's packages: {colab.report['changed']}"
    assert "flowsep" in colab.report["installed"]
    assert colab.report["first_cell_output"].startswith(f"flowsep {colab.ref[:10]} installed")
    code = "import flowsep, sys; print(flowsep.__file__)"
    where = subprocess.run([str(colab.python), "-c", code], capture_output=True, text=True, check=True,
                           cwd=colab.tmp).stdout
    assert where.startswith(str(colab.tmp / "runtime")), f"flowsep imported from {where}, not from the runtime"
    assert _versions(colab.base / "bin" / "python") == colab.preinstalled, "the base environment changed"


@pytest.mark.slow
def test_colab_cell_reports_an_unreachable_repository(colab, tmp_path):
    cell = book_build.colab_cell(f"file://{tmp_path}/no-such-repository", "main")
    proc = subprocess.run([str(colab.python), "-c", "import google.colab, sys; exec(sys.stdin.read(), {})"],
                          input=cell, capture_output=True, text=True, env={**os.environ, **colab.env},
                          cwd=tmp_path, timeout=300)
    assert proc.returncode != 0 and "set REPOSITORY to a copy you can reach" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_chapter_runs_on_colab(path, colab, tmp_path):
    """The chapter top to bottom at smoke on a fresh kernel in an empty folder, its first cell finding
    flowsep installed at the commit (the cell run again: nothing installed)."""
    nb = nbformat.read(path, as_version=4)
    book_build.pin_colab_cell(nb, f"file://{colab.origin}", colab.ref)
    nb.metadata["kernelspec"] = {"name": colab_sim.KERNEL_NAME, "language": "python", "display_name": "Colab"}
    source = tmp_path / path.name
    nbformat.write(nb, source)
    work = tmp_path / "content"
    work.mkdir()
    dest = REPORT / path.name
    try:
        seconds, done = _execute(source, dest, work, colab.env, parameters={"PROFILE": "smoke"})
    except Exception as e:   # papermill's error names the cell and the exception
        pytest.fail(f"{path.name} on Colab (executed copy: {dest}):\n{str(e)[-3000:]}", pytrace=False)
    first = next(c for c in done.cells if c.cell_type == "code")
    output = "".join(o.get("text", "") for o in first.outputs)
    assert f"flowsep {colab.ref[:10]} is installed" in output, output
    report = json.loads((REPORT / "report.json").read_text())
    report["chapters"][path.stem] = {"seconds": round(seconds, 1), "first_cell_seconds": _cell_seconds(first)}
    (REPORT / "report.json").write_text(json.dumps(report, indent=1) + "\n")


# ---- the interactive parts under ipywidgets 7 (Colab) and 8 (local) ---------------------------------
#: Builds chapter 5's separation panel on two untrained smoke priors, sets 3 iterations and presses
#: *Separate*; prints, as JSON, what the run showed. Outside a kernel the panel's output area captures
#: nothing, so what it shows (the score table, the players, an error line) is printed: that is read here.
PANEL_CHECK = """
import contextlib, io, json, torch, ipywidgets
from flowsep.prior import FlowPrior, PriorConfig
from flowsep.widgets import separation_panel
torch.manual_seed(0)
cfg = PriorConfig.preset("smoke")
priors = {name: FlowPrior(cfg).eval() for name in ("vocals", "bass")}
t = torch.arange(cfg.sample_rate) / cfg.sample_rate
stems = {"vocals": 0.3 * torch.sin(2 * torch.pi * 440 * t)[None], "bass": 0.3 * torch.sin(2 * torch.pi * 55 * t)[None]}
mixture = stems["vocals"] + stems["bass"]
panel = separation_panel(priors, mixture, cfg.sample_rate, references=stems, device="cpu", iterations=150)
grid, button, out = panel.children
next(c for c in grid.children if c.description == "iterations").value = 3
shown = io.StringIO()
with contextlib.redirect_stdout(shown):
    button.click()
print(json.dumps({"ipywidgets": ipywidgets.__version__, "shown": shown.getvalue(), "enabled": not button.disabled}))
"""


def _check_panel(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in outcome["shown"], outcome["shown"]
    assert "SDR" in outcome["shown"] and "HTML object" in outcome["shown"], f"no table or players: {outcome}"
    assert outcome["enabled"], "the Separate button stays disabled after a run"
    return outcome["ipywidgets"]


def test_separation_panel_runs_with_this_environments_ipywidgets(tmp_path):
    proc = subprocess.run([sys.executable, "-c", PANEL_CHECK], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "MPLBACKEND": "Agg"}, timeout=300)
    assert _check_panel(proc).startswith("8.")


@pytest.mark.slow
def test_separation_panel_runs_with_colabs_ipywidgets(colab):
    proc = subprocess.run([str(colab.python), "-c", PANEL_CHECK], capture_output=True, text=True, cwd=colab.tmp,
                          env={**os.environ, "MPLBACKEND": "Agg"}, timeout=300)
    assert _check_panel(proc) == "7.7.1"
