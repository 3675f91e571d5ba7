"""Build the book: execute every chapter with papermill, then render the executed copies with Jupyter Book.

Usage (``make book`` runs the first line with PROFILE=cpu)::

    python -m flowsep.book_build --profile cpu
    python -m flowsep.book_build --profile smoke --chapters 01 02 --strict
    python -m flowsep.book_build --profile paper --dataset /data/musdb18 --device cuda

The chapters are the notebooks listed in ``_toc.yml``, in its order (adding a chapter to the toc adds
it here). Each one runs alone on a fresh ``python3`` kernel, in its own folder, with the parameters
``PROFILE`` (and ``DATASET`` / ``DEVICE`` when given) injected into its cell tagged ``parameters``.
The notebooks in ``book/`` are never written to. Under ``--out`` (default ``_build``):

    executed/<chapter>.ipynb   what papermill ran, outputs included (manifest.json: profile, source hash)
    src/                       the book's sources with the executed notebooks in place of the stripped ones
                               (and MathJax in _mathjax/ when `make setup` installed it: no CDN needed)
    html/                      the rendered book (``jupyter-book build src``)
    timings.json               seconds per chapter, for the HTML and in total
    jupyter-book.log           the full output of the last ``jupyter-book build``

Chapters left out with ``--chapters`` reuse their executed copy from an earlier run with the same
parameters if their source has not changed since; a chapter that has none is left out of that build's table of
contents. The pages show the book, not its machinery (:func:`present`): the chapters run with progress
bars off (``FLOWSEP_PROGRESS=off``), and the Colab cell, the parameter cells, the glue and assert
statements and whatever went to stderr are left off the page.
"""
from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill as pm
import soundfile as sf
import torch
import yaml
from jupyter_client.kernelspec import NoSuchKernel

from . import worklog
from .constants import PROFILES
from .errors import FlowsepError, exit_status
from .io import atomic_path

KERNEL = "python3"
BOOK_FILES = ("_config.yml", "_toc.yml")   # besides the folders of the toc's files
#: set to 1 for the chapters' kernels while the book is built (see flowsep.widgets.glue)
BOOK_BUILD_ENV = "FLOWSEP_BOOK_BUILD"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
#: in a Markdown page of the book, replaced in the rendered copy by the timings of the build that rendered it
TIMINGS_MARKER = "<!-- flowsep: timings of this build -->"


# ---- the table of contents --------------------------------------------------------------------------
def find_root(start=None) -> Path:
    """The book's root: the folder holding ``_toc.yml`` (the repository by default, else the working folder)."""
    candidates = [Path(start)] if start else [Path(__file__).resolve().parent.parent, Path.cwd()]
    for c in candidates:
        if (c / "_toc.yml").is_file() and (c / "_config.yml").is_file():
            return c.resolve()
    raise FlowsepError(f"no _toc.yml and _config.yml in {candidates[0]}; run from the flowsep repository")


def _toc_entries(node) -> list[str]:
    out = []
    if isinstance(node, dict):
        for key in ("root", "file"):
            if isinstance(node.get(key), str):
                out.append(node[key])
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key) or []:
                out.extend(_toc_entries(child))
    return out


def toc_files(root) -> list[str]:
    """Every document of ``_toc.yml`` in reading order, as written there (no suffix, e.g. ``book/intro``)."""
    root = Path(root)
    try:
        toc = yaml.safe_load((root / "_toc.yml").read_text())
    except (OSError, yaml.YAMLError) as e:
        raise FlowsepError(f"cannot read {root / '_toc.yml'} ({e}); fix the table of contents") from None
    return _toc_entries(toc)


def _resolve(root: Path, entry: str) -> Path:
    p = root / entry
    if p.suffix:
        return p
    for suffix in (".ipynb", ".md"):
        if p.with_suffix(suffix).is_file():
            return p.with_suffix(suffix)
    raise FlowsepError(f"_toc.yml lists {entry} but neither {entry}.ipynb nor {entry}.md exists")


def chapters(root=None) -> list[Path]:
    """The chapter notebooks, in the order of ``_toc.yml``."""
    root = find_root(root)
    return [p for p in (_resolve(root, e) for e in toc_files(root)) if p.suffix == ".ipynb"]


def select(found: list[Path], names) -> list[Path]:
    """Chapters chosen by number prefix ("01"), stem ("01_separation_problem") or path; all when empty."""
    if not names:
        return list(found)
    chosen = []
    for name in names:
        key = Path(name).stem
        hits = [p for p in found if p.stem == key or p.stem.split("_", 1)[0] == key]
        if not hits:
            raise FlowsepError(f"no chapter {name!r} in _toc.yml; choose among: "
                               f"{', '.join(p.stem for p in found)}")
        chosen.extend(h for h in hits if h not in chosen)
    return [p for p in found if p in chosen]  # toc order


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- execution ---------------------------------------------------------------------------------------
def execute(notebook: Path, dest: Path, parameters: dict, kernel: str = KERNEL,
            worklog_file: Path | None = None) -> None:
    """Run one chapter on a fresh kernel with papermill, in the chapter's folder; write the result to ``dest``.

    worklog_file: the file where the chapter logs the cached things it makes and reuses (:mod:`flowsep.worklog`).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    # the kernel inherits these: flowsep.widgets.glue stores for the text, no progress bars run, and the
    # cached things the chapter uses are logged
    env = {BOOK_BUILD_ENV: "1", "FLOWSEP_PROGRESS": "off", worklog.ENV: str(worklog_file or "")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        pm.execute_notebook(str(notebook), str(dest), parameters=parameters, kernel_name=kernel,
                            cwd=str(notebook.parent), progress_bar=False, log_output=False)
    except NoSuchKernel:
        raise FlowsepError(f"no Jupyter kernel named {kernel!r}; run `make setup` (it installs one)") from None
    except pm.PapermillExecutionError as e:
        evalue = str(e.evalue).strip().splitlines()
        raise FlowsepError(f"{notebook.name} failed in cell {e.exec_count}: {e.ename}: "
                           f"{evalue[0][:300] if evalue else ''} (see {dest})") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def failed_cells(nb) -> list[str]:
    """Errors recorded in an executed notebook (``ename: evalue`` per failing cell)."""
    errors = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                errors.append(f"{out.get('ename')}: {out.get('evalue')}")
    return errors


# ---- static pages ------------------------------------------------------------------------------------
def _is_progress_bar(models: dict, box: dict) -> bool:
    """Whether a widget is a tqdm bar (an HBox of HTML, FloatProgress or IntProgress, HTML)."""
    kids = [models.get(str(k).replace("IPY_MODEL_", ""), {}) for k in box.get("state", {}).get("children", [])]
    names = [k.get("model_name") for k in kids]
    return len(kids) == 3 and names[1] in ("FloatProgressModel", "IntProgressModel")


def _hidden(models: dict, widget: dict) -> bool:
    """Whether a widget was hidden when the run ended (its layout's visibility or display)."""
    layout = models.get(str(widget.get("state", {}).get("layout", "")).replace("IPY_MODEL_", ""), {})
    style = layout.get("state", {})
    return style.get("visibility") == "hidden" or style.get("display") == "none"


def staticize_widgets(nb):
    """Replace widget outputs by what a static page can show; drop the saved widget state.

    A progress bar is dropped (a page is read after the run: its bars say nothing), as is a widget hidden
    at the end of the run; any other widget becomes a short note that it is interactive (run the
    notebook to use it). Returns ``nb`` (changed in place).
    """
    state = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW not in data:
                kept.append(out)
                continue
            model = state.get(data[WIDGET_VIEW].get("model_id", ""), {})
            if _hidden(state, model) or (model.get("model_name") == "HBoxModel" and _is_progress_bar(state, model)):
                continue
            kept.append(out)
            data.pop(WIDGET_VIEW)
            data["text/html"] = ('<p class="flowsep-widget-note"><em>An interactive control: run this notebook '
                                 '(Colab button above, or Jupyter) to use it.</em></p>')
        if "outputs" in cell:
            cell.outputs = kept
    return nb


# ---- the page shows the book, not its machinery ------------------------------------------------------
#: Jupyter Book's cell tag for a cell that ran but is not shown
REMOVE_CELL = "remove-cell"
#: papermill's tags: the chapter's parameters and the values injected into it
PARAMETER_TAGS = ("parameters", "injected-parameters")


def _called(node) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else getattr(f, "attr", "")


def is_bookkeeping(node: ast.stmt) -> bool:
    """A statement that only hands a number to the text (``glue(...)``) or checks one (``assert``), or a
    ``for`` loop or an ``if`` of such statements."""
    if isinstance(node, ast.Assert):
        return True
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        return _called(node.value) == "glue"
    if isinstance(node, (ast.For, ast.If)):
        return all(is_bookkeeping(n) for n in node.body + node.orelse)
    return False


def _stored(node) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))}


def _loaded(node) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def split_bookkeeping(source: str) -> tuple[str, str]:
    """``(shown, bookkeeping)``: a cell's code without its glue and assert statements, and those statements.

    A statement moves only if nothing after it in the cell changes a name it reads (so that, run after the
    shown code, it sees the same values); comment lines right above a moved statement move with it.
    """
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return source, ""
    later_stores = [set() for _ in body]
    acc = set()
    for i in range(len(body) - 1, -1, -1):
        later_stores[i] = set(acc)
        acc |= _stored(body[i])
    lines = source.splitlines()
    moved = [False] * len(lines)
    for i, node in enumerate(body):
        reads = _loaded(node) - _stored(node)   # a comprehension's own variables are not read from the cell
        if is_bookkeeping(node) and not (reads & later_stores[i]):
            first = node.lineno - 1
            while first > 0 and lines[first - 1].lstrip().startswith("#"):
                first -= 1
            for k in range(first, node.end_lineno):
                moved[k] = True
    shown = "\n".join(line for line, m in zip(lines, moved) if not m).rstrip()
    kept = "\n".join(line for line, m in zip(lines, moved) if m)
    return shown, kept


#: the titles a cell gives its figures: ``title="..."``, ``set_title("...")``, ``suptitle("...")`` (plain strings)
_TITLE = re.compile(r"""(?:\btitle\s*=\s*|set_title\(\s*|suptitle\(\s*)f?(["'])([^"'{}\n]+)\1""")


def figure_alt(source: str, section: str) -> str:
    """The alternative text of a cell's figures (what a screen reader says, and what shows where an image
    does not load): the titles the cell's code gives them, else the section they are in."""
    titles = list(dict.fromkeys(m.group(2).strip() for m in _TITLE.finditer(source)))
    if titles:
        return "Figure: " + "; ".join(titles[:3])
    return f"Figure of the section {section}" if section else "Figure"


def _plain_heading(markdown: str, before: str) -> str:
    r"""The last heading of a Markdown cell (outside code fences) as plain text ($1\times1$ -> 1×1), or
    ``before`` where the cell has none."""
    headings, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and re.match(r"#+ ", line):
            text = re.sub(r"\$([^$]*)\$", lambda m: m.group(1).replace("\\times", "×"), line.lstrip("#").strip())
            headings.append(re.sub(r"\\[A-Za-z]+\s*", "", text))
    return headings[-1] if headings else before


def present(nb):
    """The executed chapter as its page shows it: its Colab cell and papermill's parameter cells are
    removed from the page, glue and assert statements go into a removed cell after the code they
    follow (a cell of nothing else is removed whole), what went to stderr (logs, warnings, text
    progress bars) is dropped, large figures are stored with a palette (:func:`lighter_png`) and every
    figure gets an alternative text (:func:`figure_alt`). What ran is unchanged: only Jupyter Book's
    ``remove-cell`` tags, the figures' text and the cells' split differ. Returns ``nb`` (changed in place)."""
    cells, section = [], ""
    for cell in nb.cells:
        if cell.cell_type != "code":
            section = _plain_heading(cell.source, section)
            cells.append(cell)
            continue
        tags = cell.metadata.setdefault("tags", [])
        cell.outputs = [o for o in cell.get("outputs", [])
                        if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
        for out in cell.outputs:
            png = out.get("data", {}).get("image/png")
            if png:
                out["data"]["image/png"] = base64.b64encode(lighter_png(base64.b64decode(png))).decode()
                options = cell.metadata.setdefault("mystnb", {}).setdefault("image", {})   # myst-nb's image options
                options.setdefault("alt", figure_alt(cell.source, section))
        if is_colab_cell(cell) or any(t in tags for t in PARAMETER_TAGS):
            tags.append(REMOVE_CELL)
            cells.append(cell)
            continue
        shown, kept = split_bookkeeping(cell.source)
        if kept and not shown:
            tags.append(REMOVE_CELL)
            cells.append(cell)
            continue
        cell.source = shown
        cells.append(cell)
        if kept:
            cells.append(nbformat.v4.new_code_cell(kept, metadata={"tags": [REMOVE_CELL]}))
    nb.cells = cells
    return nb


def _chapter_title(notebook: Path) -> str:
    """The first Markdown heading of a chapter notebook (its stem when it has none)."""
    for cell in nbformat.read(notebook, as_version=4).cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return notebook.stem


def _duration(seconds) -> str:
    if seconds is None:
        return "?"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


#: Seconds per chapter (by number) at the ``gpu`` profile on a Colab T4 that are not training: data
#: generation, separation, museval. Estimated from the CPU work measured at the cpu profile and the FLOP
#: count of benchmarks/gpu_estimate.py; no GPU measurement yet. The training is added by
#: :func:`gpu_training_seconds` from the budgets the chapters use.
GPU_OTHER_SECONDS = {"01": 45, "02": 60, "03": 60, "04": 120, "05": 180, "06": 600, "07": 360}


def gpu_training_seconds() -> dict[str, float]:
    """Seconds of training per chapter (by number) at the ``gpu`` profile, from the budgets the chapters
    read: chapter 4 trains four priors (``PriorConfig.preset("gpu").train_seconds`` each); chapter 6 races
    four supervised systems at ``RACE_SECONDS["gpu"]`` (InstGlow's entry is chapter 4's priors when a
    quarter of the race is a prior's budget, else four priors of that quarter) and runs the budget curve's
    other points (``CURVE_FRACTIONS``) for InstGlow and Open-Unmix; chapter 7 trains three priors."""
    from .comparison import CURVE_FRACTIONS, RACE_SECONDS
    from .prior import PriorConfig

    prior, race = PriorConfig.preset("gpu").train_seconds, RACE_SECONDS["gpu"]
    instglow = 0.0 if race / 4 == prior else race
    curve = 2 * sum(f * race for f in CURVE_FRACTIONS["gpu"])
    return {"04": 4 * prior, "06": 4 * race + instglow + curve, "07": 3 * prior}


def gpu_estimates() -> dict[str, float]:
    """Seconds per chapter (by number) at the ``gpu`` profile on a Colab T4, from nothing cached: the
    training budgets of :func:`gpu_training_seconds` plus :data:`GPU_OTHER_SECONDS` (an estimate)."""
    training = gpu_training_seconds()
    return {stem: other + training.get(stem, 0.0) for stem, other in GPU_OTHER_SECONDS.items()}


def _gpu_cell(stem: str, entry: dict, timings: dict) -> str:
    """The GPU column of a chapter: this build's time when it ran at ``gpu`` on a GPU, else the estimate."""
    if timings.get("profile") == "gpu" and "GPU" in (timings.get("machine") or "") and "without" not in \
            timings["machine"]:
        return f"{_duration(entry.get('seconds'))} measured (this build)"
    estimate = gpu_estimates().get(stem[:2])
    if estimate is None:
        return "not estimated"
    return f"{_duration(estimate)} estimated (training budgets + FLOP count, no GPU measurement yet)"


def timings_markdown(timings: dict, titles: dict) -> str:
    """This build's profile, machine and seconds per chapter, as the Markdown that replaces TIMINGS_MARKER.

    titles: {chapter stem: title}, in reading order; chapters missing from ``timings`` are skipped.
    The GPU column: the ``gpu`` profile on a Colab T4, measured when this build ran it on a GPU, otherwise
    :func:`gpu_estimates`, labelled as estimates.
    """
    machine = timings.get("machine") or f"{timings.get('cpu_count')} CPU cores"
    lines = [f"This copy of the book was rendered at the `{timings['profile']}` profile on {machine}. "
             "For each chapter: its time in that run, in sequence (what an earlier chapter made was reused; a "
             "chapter marked *earlier run* was executed by a previous build with the same parameters); its "
             "time run alone from nothing (its own time plus the time this build spent making what it reused: "
             "the synthetic set, the priors, a supervised model); and its time at the `gpu` profile on a "
             "Colab T4 GPU:", "",
             f"```{{table}} Each chapter's time: this build at `{timings['profile']}` (in sequence, and alone from "
             "nothing), and the `gpu` profile on a T4", ":name: timings-table", "",
             "| chapter | in sequence | alone, from nothing | GPU (`gpu` profile, T4) |", "|---|---|---|---|"]
    total, gpu_total, measured = 0.0, 0.0, True
    for stem, title in titles.items():
        entry = timings["chapters"].get(stem)
        if not entry:
            continue
        total += entry.get("seconds") or 0.0
        note = " (earlier run)" if entry.get("status") == "reused" else ""
        alone = entry.get("alone_seconds")
        alone = _duration(alone) if alone is not None else "not recorded"
        gpu = _gpu_cell(stem, entry, timings)
        measured = measured and "measured" in gpu
        gpu_total += (entry.get("seconds") or 0.0) if "measured" in gpu else gpu_estimates().get(stem[:2], 0)
        lines.append(f"| {title} | {_duration(entry.get('seconds'))}{note} | {alone} | {gpu} |")
    kind = "measured" if measured else "estimated"
    lines += [f"| all chapters | {_duration(total)} | | {_duration(gpu_total)} {kind} |", "```"]
    return "\n".join(lines) + "\n"


def _machine(device: str | None = None) -> str:
    """The build machine in words: CPU cores and the widest vector units torch uses on them (AVX2, AVX512: a
    cpu build's time depends on them), and the GPU the chapters use (if any)."""
    words = f"{os.cpu_count()} CPU cores ({torch.backends.cpu.get_cpu_capability()})"
    try:
        if torch.cuda.is_available() and device != "cpu":
            return words + f" with a {torch.cuda.get_device_name(0)} GPU"
    except ImportError:
        pass
    return words + " without a GPU"


def local_mathjax() -> Path | None:
    """MathJax 3's ``es5`` folder installed by ``make setup`` (or at ``$FLOWSEP_MATHJAX``), if there is one."""
    env = os.environ.get("FLOWSEP_MATHJAX")
    folder = Path(env) if env else Path(sys.prefix) / "share" / "flowsep-mathjax"
    return folder if (folder / "tex-chtml.js").is_file() else None


#: the book's own style sheet, beside the theme's: myst-nb draws every glued value in bold, so a glued
#: phrase would read as a bold clause; the book's numbers and words read as the text around them
BOOK_CSS = "span.pasted-text { font-weight: inherit; }\n"


def _use_book_css(src: Path) -> None:
    """Serve :data:`BOOK_CSS` with the pages (``html/_static/flowsep.css``, an ``html_css_files`` entry)."""
    folder = src / "_flowsep_css"
    folder.mkdir(exist_ok=True)
    (folder / "flowsep.css").write_text(BOOK_CSS)
    config = yaml.safe_load((src / "_config.yml").read_text())
    sphinx_config = config.setdefault("sphinx", {}).setdefault("config", {})
    sphinx_config["html_static_path"] = list(sphinx_config.get("html_static_path") or []) + ["_flowsep_css"]
    sphinx_config["html_css_files"] = list(sphinx_config.get("html_css_files") or []) + ["flowsep.css"]
    (src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))


def _use_local_mathjax(src: Path, mathjax: Path) -> None:
    """Copy MathJax next to the book and point Sphinx at it, so equations render offline.

    It goes to ``src/_mathjax/mathjax`` (an ``html_static_path``: ``html/_static/mathjax`` in the pages),
    not to a ``_static`` folder, from which Jupyter Book would load every script, all of MathJax's
    lazily loaded parts included. When the book has a ``_static`` folder, Jupyter Book scans the other
    static paths too: then nothing is copied and the pages use the CDN.
    """
    if (src / "_static").exists():
        return
    shutil.copytree(mathjax, src / "_mathjax" / "mathjax", dirs_exist_ok=True)
    config = yaml.safe_load((src / "_config.yml").read_text())
    sphinx_config = config.setdefault("sphinx", {}).setdefault("config", {})
    sphinx_config["mathjax_path"] = "mathjax/tex-chtml.js"   # relative to html/_static
    sphinx_config["html_static_path"] = list(sphinx_config.get("html_static_path") or []) + ["_mathjax"]
    (src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))


# ---- the Colab cell ------------------------------------------------------------------------------------
#: The first code cell of every chapter, filled in by :func:`colab_cell`. On Colab it clones the repository
#: at REF and installs flowsep with flowsep/colab_setup.py (Colab's own packages kept as they are);
#: anywhere else it does nothing.
COLAB_CELL = '''\
# On Colab: install flowsep from its repository at REF (the commit that rendered this book; the branch in
# the repository's copy). Colab's own packages (torch, numpy, pandas, matplotlib, ...) stay as they are;
# what Colab lacks is added (flowsep/colab_setup.py says how). Running it again installs nothing new.
# Anywhere else this cell does nothing (install flowsep with `make setup`, see the preface).
# If REPOSITORY cannot be reached, set it to a copy you can (a fork's URL, or the repository uploaded
# to Colab as "file:///content/flowsep") and run this cell again.
# Colab shows the book's markup as typed: {{cite}}`key` is a reference (author and year; the book's
# References page lists them), {{glue:text}}`name` a number that this chapter's cells print, and the
# {{exercise}} / {{solution}} blocks are the exercises and their solutions.
REPOSITORY = "{repository}"  # _config.yml's repository url
REF = "{ref}"
import sys

if "google.colab" in sys.modules:
    import importlib.util, pathlib, subprocess
    src = pathlib.Path("flowsep-src").resolve()
    git = ["git", "-C", str(src)]
    try:
        if not (src / ".git").is_dir():
            subprocess.run(["git", "clone", "-q", REPOSITORY, str(src)], check=True)
        if subprocess.run(git + ["checkout", "-q", REF], capture_output=True).returncode:
            subprocess.run(git + ["fetch", "-q", "origin"], check=True)
            subprocess.run(git + ["checkout", "-q", REF], check=True)
    except subprocess.CalledProcessError:
        raise RuntimeError(f"cannot fetch {{REF}} of {{REPOSITORY}}: set REPOSITORY to a copy you can reach "
                           "and run this cell again") from None
    spec = importlib.util.spec_from_file_location("flowsep_colab_setup", src / "flowsep" / "colab_setup.py")
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)
    print(setup.install(src))
    importlib.invalidate_caches()
'''


def repository(root=None) -> tuple[str, str]:
    """``(url, branch)`` of ``_config.yml``'s ``repository`` section: where Colab installs flowsep from."""
    root = find_root(root)
    repo = (yaml.safe_load((root / "_config.yml").read_text()) or {}).get("repository") or {}
    if not repo.get("url"):
        raise FlowsepError(f"{root / '_config.yml'} has no repository url; Colab would not know where to "
                           "install flowsep from")
    return str(repo["url"]).rstrip("/"), str(repo.get("branch") or "main")


def commit(root=None) -> str | None:
    """The commit checked out in the book's repository (``git rev-parse HEAD``), None outside git."""
    try:
        proc = subprocess.run(["git", "-C", str(find_root(root)), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def colab_cell(url: str, ref: str) -> str:
    """The source of a chapter's first cell: installs flowsep from ``url`` at ``ref`` when on Colab."""
    return COLAB_CELL.format(repository=url, ref=ref).rstrip("\n")


def is_colab_cell(cell) -> bool:
    return cell.get("cell_type") == "code" and 'if "google.colab" in sys.modules' in "".join(cell.get("source", ""))


def write_colab_cells(root=None) -> list[Path]:
    """Rewrite the first code cell of every chapter in ``book/`` from ``_config.yml`` (url and branch).

    Run it after changing the repository in ``_config.yml``; tests/test_colab.py checks that the committed
    chapters agree. Returns the notebooks changed.
    """
    root = find_root(root)
    url, branch = repository(root)
    changed = []
    for path in chapters(root):
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if c.cell_type == "code")
        if cell.source != colab_cell(url, branch):
            cell.source = colab_cell(url, branch)
            nbformat.write(nb, path)
            changed.append(path)
    return changed


def pin_colab_cell(nb, url: str, ref: str):
    """In an executed chapter (the rendered copy), make the Colab cell install ``url`` at ``ref``."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            if is_colab_cell(cell):
                cell.source = colab_cell(url, ref)
            break
    return nb


# ---- audio and images beside the page ------------------------------------------------------------------
#: a wav or png embedded as a data: URI in an HTML output (what IPython's Audio and flowsep.widgets write)
_DATA_URI = re.compile(r'src="data:(audio/(?:x-)?wav|audio/wave|image/png);base64,([A-Za-z0-9+/=\s]+)"'
                       r'(\s+type="audio/(?:x-)?wav")?')
MEDIA_FOLDER = "_media"   # in the rendered sources; an html_extra_path, so its files land beside the pages
MAX_PNG_BYTES = 300_000   # an image larger than this is stored with a palette of 256 colours


def lighter_png(png: bytes) -> bytes:
    """A PNG over :data:`MAX_PNG_BYTES` stored with an adaptive palette of 256 colours (a spectrogram's
    colour map survives it; the file shrinks about fivefold); smaller ones as they are."""
    if len(png) <= MAX_PNG_BYTES:
        return png
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue() if buf.tell() < len(png) else png


def _compressed_audio(wav: bytes) -> tuple[bytes, str, str]:
    """A wav file as MP3 (libsndfile's LAME encoder through soundfile), about a tenth of its size, which
    every browser plays: (bytes, suffix, MIME type). A rate MP3 cannot hold stays wav."""

    data, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    buf = io.BytesIO()
    try:
        sf.write(buf, data, rate, format="MP3", subtype="MPEG_LAYER_III")
    except (sf.LibsndfileError, RuntimeError, ValueError):
        return wav, ".wav", "audio/wav"
    return buf.getvalue(), ".mp3", "audio/mpeg"


def externalize_media(nb, folder: Path, prefix: str) -> int:
    """Move the wav players and png images embedded in ``nb``'s HTML outputs to files in ``folder``.

    Each ``data:`` URI becomes a file named by its content's hash (audio compressed to MP3) and the
    output's ``src`` the relative URL ``prefix/<file>``; identical media share one file. The page then
    holds links instead of megabytes of base64, and players load their sound only when asked
    (``preload="metadata"``). The notebook is changed in place; returns the number of URIs replaced.
    """
    count = 0

    def replace(match):
        nonlocal count
        kind, payload, wav_type = match.group(1), match.group(2), match.group(3)
        raw = base64.b64decode("".join(payload.split()))
        if kind.startswith("audio"):
            data, suffix, mime = _compressed_audio(raw)
        else:
            data, suffix, mime = lighter_png(raw), ".png", None
        name = hashlib.sha256(data).hexdigest()[:20] + suffix
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / name).is_file():
            (folder / name).write_bytes(data)
        count += 1
        return f'src="{prefix}/{name}"' + (f' type="{mime}"' if wav_type else "")

    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            html_ = data.get("text/html")
            if not html_:
                continue
            text = "".join(html_) if isinstance(html_, list) else html_
            if "data:" not in text:
                continue
            text = _DATA_URI.sub(replace, text)
            text = re.sub(r"<audio(?![^>]*\bpreload=)", '<audio preload="metadata"', text)
            data["text/html"] = text
    return count


def _serve_media(src: Path) -> None:
    """Tell Sphinx to copy ``src/_media`` into the HTML as it is (an ``html_extra_path``)."""
    config = yaml.safe_load((src / "_config.yml").read_text())
    sphinx_config = config.setdefault("sphinx", {}).setdefault("config", {})
    sphinx_config["html_extra_path"] = list(sphinx_config.get("html_extra_path") or []) + [MEDIA_FOLDER]
    (src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))


# ---- the student edition -------------------------------------------------------------------------------
def _is_marker(cell, name: str) -> bool:
    return cell.get("cell_type") == "markdown" and "{" + name + "}" in "".join(cell.get("source", ""))


def student_edition(nb):
    """``nb`` without the solutions whose code runs in cells of their own (in place; returns it).

    A solution with code is written as sphinx-exercise's gated directives: a Markdown cell with
    ``{solution-start} LABEL``, the code cells, a Markdown cell with ``{solution-end}``. Sphinx's
    ``hide_solutions`` drops the directives but not the cells between them, so they go here, start and
    end included. Solutions written as one ``{solution}`` directive are left to ``hide_solutions``.
    """
    cells, inside = [], False
    for cell in nb.cells:
        if _is_marker(cell, "solution-start"):
            inside = True
        elif _is_marker(cell, "solution-end") and inside:
            inside = False
        elif not inside:
            cells.append(cell)
    if inside:
        raise FlowsepError("a {solution-start} without a {solution-end}: the student edition would lose the rest")
    nb.cells = cells
    return nb


def _hide_solutions(src: Path) -> None:
    """Set sphinx-exercise's ``hide_solutions`` in the rendered copy's ``_config.yml``."""
    config = yaml.safe_load((src / "_config.yml").read_text())
    config.setdefault("sphinx", {}).setdefault("config", {})["hide_solutions"] = True
    (src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))


def assemble(root: Path, out: Path, executed: dict, timings: dict | None = None,
             hide_solutions: bool = False) -> tuple[Path, list[str]]:
    """Copy the book's sources to ``out/src`` with executed notebooks in place of the stripped ones.

    executed: {notebook path in book/: executed copy}. Chapters without an executed copy are left out of
    the copied ``_toc.yml``. ``timings`` (see :func:`build`) replaces :data:`TIMINGS_MARKER` in the
    Markdown pages. ``hide_solutions``: the student edition, every solution left out (sphinx-exercise's
    ``hide_solutions``, and :func:`student_edition` for solutions with code). Returns (the source folder,
    the toc entries left out).
    """
    src = out / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for name in BOOK_FILES:
        shutil.copy2(root / name, src / name)
    folders = sorted({Path(e).parts[0] for e in toc_files(root) if len(Path(e).parts) > 1})
    for folder in folders:
        shutil.copytree(root / folder, src / folder,
                        ignore=shutil.ignore_patterns("_executed", ".ipynb_checkpoints", "__pycache__"))
    mathjax = local_mathjax()
    if mathjax is not None:  # else the pages load MathJax from its CDN
        _use_local_mathjax(src, mathjax)
    _use_book_css(src)
    titles = {p.stem: _chapter_title(p) for p in chapters(root) if p in executed}
    url, branch = repository(root)
    ref = commit(root) or branch   # the Colab cell of the rendered pages installs this very commit
    left_out = []
    media = 0
    for entry in toc_files(root):
        path = _resolve(root, entry)
        if path.suffix == ".md" and timings is not None:
            target = src / path.relative_to(root)
            text = target.read_text()
            if TIMINGS_MARKER in text:
                target.write_text(text.replace(TIMINGS_MARKER, timings_markdown(timings, titles)))
        if path.suffix != ".ipynb":
            continue
        target = src / path.relative_to(root)
        if path in executed:
            nb = present(staticize_widgets(nbformat.read(executed[path], as_version=4)))
            nb = pin_colab_cell(nb, url, ref)
            if hide_solutions:
                nb = student_edition(nb)
            rel = path.relative_to(root)
            media += externalize_media(nb, src / MEDIA_FOLDER / rel.parent / f"{path.stem}_media",
                                       f"{path.stem}_media")
            nbformat.write(nb, target)
        else:
            left_out.append(entry)
    if media:
        _serve_media(src)
    if hide_solutions:
        _hide_solutions(src)
    if left_out:
        toc = yaml.safe_load((root / "_toc.yml").read_text())
        _drop_entries(toc, set(left_out))
        (src / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    return src, left_out


def _drop_entries(node, drop: set) -> None:
    if isinstance(node, dict):
        for key in ("parts", "chapters", "sections"):
            if key in node:
                node[key] = [c for c in node[key] if not (isinstance(c, dict) and c.get("file") in drop)]
                for c in node[key]:
                    _drop_entries(c, drop)
        if "parts" in node:
            node["parts"] = [p for p in node["parts"] if p.get("chapters")]


def jupyter_book() -> str:
    exe = Path(sys.executable).parent / "jupyter-book"
    found = str(exe) if exe.is_file() else shutil.which("jupyter-book")
    if not found:
        raise FlowsepError("jupyter-book is not installed; run `make setup` or pip install -e '.[book]'")
    return found


def render(src: Path, out: Path, strict: bool = False) -> Path:
    """``jupyter-book build`` of ``src``; the HTML ends up in ``out/html``. Returns that folder."""
    stage = out / ".jupyter-book"
    cmd = [jupyter_book(), "build", str(src), "--path-output", str(stage), "--builder", "html", "--all"]
    if strict:
        cmd += ["--warningiserror", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = out / "jupyter-book.log"
    log.write_text(proc.stdout + "\n" + proc.stderr)
    built = stage / "_build" / "html"
    if proc.returncode != 0 or not (built / "index.html").is_file():
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "WARNING" in ln or "ERROR" in ln]
        first = lines[0].strip() if lines else (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise FlowsepError(f"jupyter-book build failed ({len(lines)} warnings/errors; first: {first[:300]}); "
                           f"full log: {log}")
    final = out / "html"
    old = out / ".html-old"
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    shutil.move(str(built), str(final))
    if old.exists():
        shutil.rmtree(old)
    return final


# ---- the whole build ---------------------------------------------------------------------------------
def _run_chapters(chosen: list[Path], root: Path, exec_dir: Path, params: dict, kernel: str, timings: dict,
                  log) -> list[str]:
    """Execute each chosen chapter into ``exec_dir``, recording its seconds in ``timings`` and in the
    folder's manifest (what ran, with which parameters, from which source). A failing chapter does not stop
    the others. Returns the failures, a line each."""
    manifest_path = exec_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    except ValueError:
        manifest = {}
    failures = []
    for nb in chosen:
        dest = exec_dir / nb.name
        log(f"executing {nb.relative_to(root)} (PROFILE={params['PROFILE']}) ...", flush=True)
        t0 = time.perf_counter()
        status = "ok"
        source_hash = _sha256(nb)   # of the version that runs, even if it is edited meanwhile
        log_file = exec_dir / f"{nb.stem}.worklog"
        log_file.unlink(missing_ok=True)
        try:
            execute(nb, dest, params, kernel, worklog_file=log_file)
            errors = failed_cells(nbformat.read(dest, as_version=4))
            if errors:
                raise FlowsepError(f"{nb.name}: {errors[0]}")
        except FlowsepError as e:
            status = "failed"
            failures.append(str(e))
        except Exception as e:  # a dead kernel, a timeout: the other chapters still run
            status = "failed"
            failures.append(f"{nb.name}: {type(e).__name__}: {str(e).strip()[:300]}")
        seconds = time.perf_counter() - t0
        alone = worklog.alone_seconds(seconds, worklog.uses(log_file), worklog.made_seconds())
        timings["chapters"][nb.stem] = {"seconds": round(seconds, 2), "status": status,
                                        "alone_seconds": None if alone is None else round(alone, 2)}
        manifest[nb.stem] = {"profile": params["PROFILE"], "parameters": params, "source_sha256": source_hash,
                             "seconds": round(seconds, 2), "ok": status == "ok"}
        log(f"  {nb.stem}: {status} in {seconds:.1f} s", flush=True)
    with atomic_path(manifest_path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    return failures


def _executed_copies(found: list[Path], chosen: list[Path], exec_dir: Path, params: dict, timings: dict) -> dict:
    """{chapter: its executed copy} for every chapter whose copy ran with ``params`` from its current
    source; a chapter not run in this build is marked *reused* in ``timings``."""
    manifest_path = exec_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    executed = {}
    for nb in found:
        entry = manifest.get(nb.stem, {})
        copy = exec_dir / nb.name
        fresh = (entry.get("ok") and entry.get("parameters") == params and copy.is_file()
                 and entry.get("source_sha256") == _sha256(nb))
        if fresh:
            executed[nb] = copy
            if nb not in chosen:
                timings["chapters"].setdefault(nb.stem, {"seconds": entry.get("seconds"), "status": "reused"})
    return executed


def _build_folder(out, root: Path) -> Path:
    """The build folder ``out``, absolute; an error if it would write among the sources."""
    out = Path(out)
    if not out.is_absolute():
        out = (Path.cwd() / out).resolve()
    if out == root or root in out.parents and out.relative_to(root).parts[0] in ("book", "flowsep", "tests"):
        raise FlowsepError(f"--out {out} would write among the sources; use a build folder such as _build")
    return out


def build(profile: str = "cpu", chapters_: list[str] | None = None, out="_build", strict: bool = False,
          dataset: str | None = None, device: str | None = None, root=None, kernel: str = KERNEL,
          execute_chapters: bool = True, log=print, hide_solutions: bool = False) -> dict:
    """Execute the chosen chapters at ``profile`` and render the book. Returns the timings dict.

    A failing chapter does not stop the others; the HTML is rendered only when all chosen chapters ran.
    ``execute_chapters=False`` only renders, from the executed copies of earlier runs. ``hide_solutions``
    renders the student edition (no solutions; the chapters run with them all the same).
    """
    if profile not in PROFILES:
        raise FlowsepError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    root = find_root(root)
    out = _build_folder(out, root)
    found = chapters(root)
    chosen = select(found, chapters_) if execute_chapters else []
    params = {"PROFILE": profile, **({"DATASET": str(dataset)} if dataset else {}),
              **({"DEVICE": str(device)} if device else {})}
    exec_dir = out / "executed"
    exec_dir.mkdir(parents=True, exist_ok=True)
    timings = {"profile": profile, "parameters": params, "cpu_count": os.cpu_count(), "machine": _machine(device),
               "chapters": {}}
    t_start = time.perf_counter()
    failures = _run_chapters(chosen, root, exec_dir, params, kernel, timings, log)
    executed = _executed_copies(found, chosen, exec_dir, params, timings)
    if failures:
        timings["total_seconds"] = round(time.perf_counter() - t_start, 2)
        _write_timings(out, timings)
        raise FlowsepError(f"{len(failures)} chapter(s) failed: " + " | ".join(failures))

    t0 = time.perf_counter()
    timings["hide_solutions"] = bool(hide_solutions)
    src, left_out = assemble(root, out, executed, timings, hide_solutions=hide_solutions)
    for entry in left_out:
        log(f"  {entry}: not executed at PROFILE={profile} yet, left out of this build", flush=True)
    html_dir = render(src, out, strict)
    timings["html_seconds"] = round(time.perf_counter() - t0, 2)
    timings["total_seconds"] = round(time.perf_counter() - t_start, 2)
    timings["left_out"] = left_out
    _write_timings(out, timings)
    log(f"book: {html_dir / 'index.html'} (html {timings['html_seconds']:.1f} s, "
        f"total {timings['total_seconds']:.1f} s)", flush=True)
    return timings


def _write_timings(out: Path, timings: dict) -> None:
    with atomic_path(out / "timings.json", suffix=".json") as tmp:
        tmp.write_text(json.dumps(timings, indent=1) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flowsep.book_build",
        description="Execute the book's chapters with papermill at a profile and render them with Jupyter Book.")
    parser.add_argument("--profile", default="cpu", help="smoke, cpu, gpu or paper (default: cpu)")
    parser.add_argument("--chapters", nargs="+", default=None, metavar="CHAPTER",
                        help="only these chapters, by number (01) or name (default: every chapter of _toc.yml)")
    parser.add_argument("--out", default="_build", help="build folder (default: _build; the HTML goes to OUT/html)")
    parser.add_argument("--strict", action="store_true", help="fail on any Sphinx warning (jupyter-book -W)")
    parser.add_argument("--dataset", default=None, help="a MUSDB18-format root for every chapter (default: synthetic)")
    parser.add_argument("--device", default=None, help="auto, cpu or cuda for every chapter (default: auto)")
    parser.add_argument("--render-only", action="store_true",
                        help="execute nothing; render the executed copies of earlier runs at this profile")
    parser.add_argument("--hide-solutions", action="store_true",
                        help="render the student edition: the exercises without their solutions")
    parser.add_argument("--list", action="store_true", help="print the chapters of _toc.yml and exit")
    args = parser.parse_args(argv)

    def run():
        if args.list:
            for nb in chapters(find_root()):
                print(nb.relative_to(find_root()))
            return 0
        build(args.profile, args.chapters, args.out, args.strict, args.dataset, args.device,
              execute_chapters=not args.render_only, hide_solutions=args.hide_solutions)

    return exit_status(run, "flowsep.book_build")


if __name__ == "__main__":
    sys.exit(main())
