"""The autograded assignments (assignments/, `make assignments`): otter assign writes a student notebook
with the implementations blanked and an autograder with hidden tests; the autograder gives the reference
solution full marks and a deliberately broken solution less.

Each grading runs the notebook on a fresh kernel (`otter run`, no container) at smoke size: seconds of
work, dominated by loading stempeg's excerpt.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
MASTERS = sorted((ROOT / "assignments").glob("*.ipynb"))
OTTER = Path(sys.executable).parent / "otter"

#: per assignment: (the question the bug breaks, a line of the reference solution, its broken version)
BUGS = {
    "ch02_coupling": ("q1_forward", "return torch.cat([xa, zb], dim=1), s.sum(dim=(1, 2))",
                      "return torch.cat([xa, zb], dim=1), -s.sum(dim=(1, 2))"),   # the log-det's sign
    "ch04_training_step": ("q1_nll", "log_p = standard_normal_logpdf(z) + logdet_flow + logdet_transform",
                           "log_p = standard_normal_logpdf(z) + logdet_flow"),     # no transform Jacobian
    "ch05_separation": ("q1_loop", "        opt.zero_grad()\n", ""),                   # gradients accumulate
}

pytestmark = pytest.mark.slow


def test_at_least_chapters_2_4_and_5():
    assert {p.stem for p in MASTERS} >= set(BUGS)


def test_master_notebooks_are_committed_without_outputs():
    for path in MASTERS:
        nb = nbformat.read(path, as_version=4)
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), path.name


@pytest.fixture(scope="module")
def assigned(tmp_path_factory):
    """{name: folder written by `otter assign` (student/, autograder/)}, as `make assignments` does."""
    out = tmp_path_factory.mktemp("assignments")
    folders = {}
    for master in MASTERS:
        dest = out / master.stem
        proc = subprocess.run([str(OTTER), "assign", str(master), str(dest)], capture_output=True, text=True,
                              cwd=master.parent, timeout=300)
        assert proc.returncode == 0, f"otter assign {master.name}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        folders[master.stem] = dest
    return folders


def grade(folder: Path, notebook: Path, out: Path) -> dict:
    """``otter run`` of ``notebook`` against the assignment's autograder: {question: (score, max)}."""
    zips = sorted((folder / "autograder").glob("*-autograder_*.zip"))
    assert len(zips) == 1, zips
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([str(OTTER), "run", "-a", str(zips[0]), "-o", str(out), str(notebook)],
                          capture_output=True, text=True, timeout=600)
    assert (out / "results.json").is_file(), f"otter run wrote no results: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    results = json.loads((out / "results.json").read_text())
    return {t["name"]: (t.get("score"), t.get("max_score"), t.get("output", "")) for t in results["tests"]
            if t.get("max_score")}


@pytest.mark.parametrize("name", sorted(BUGS))
def test_student_notebook_has_blanks_and_no_hidden_tests(name, assigned):
    master = nbformat.read(ROOT / "assignments" / f"{name}.ipynb", as_version=4)
    student_path = assigned[name] / "student" / f"{name}.ipynb"
    student = student_path.read_text()
    solution = [c.source for c in master.cells if c.cell_type == "code" and "# BEGIN SOLUTION" in c.source]
    assert solution, f"{name}: no solution cells in the master"
    for source in solution:
        body = source.split("# BEGIN SOLUTION")[1].split("# END SOLUTION")[0]
        for line in (ln.strip() for ln in body.splitlines()):
            if len(line) > 25:
                assert json.dumps(line)[1:-1] not in student, f"{name}: the student notebook shows {line!r}"
    assert "# BEGIN SOLUTION" not in student and "    ..." in student
    hidden = [c.source for c in master.cells if c.cell_type == "code" and c.source.startswith("# HIDDEN")]
    assert hidden, f"{name}: no hidden tests"
    for source in hidden:
        test_name = re.search(r"def (test_\w+)", source).group(1)
        assert test_name not in student, f"{name}: the student notebook holds the hidden test {test_name}"
    autograder_zip = next((assigned[name] / "autograder").glob("*.zip")).name
    assert autograder_zip.startswith(f"{name}-autograder_")


@pytest.mark.parametrize("name", sorted(BUGS))
def test_reference_solution_gets_full_marks(name, assigned, tmp_path):
    scores = grade(assigned[name], assigned[name] / "autograder" / f"{name}.ipynb", tmp_path / "results")
    assert scores, f"{name}: nothing graded"
    short = {q: f"{s}/{m}" for q, (s, m, _) in scores.items()}
    print(f"{name} reference: {short}")
    failed = {q: out[-600:] for q, (s, m, out) in scores.items() if s != m}
    assert not failed, f"{name}: the reference solution lost points: {failed}"


@pytest.mark.parametrize("name", sorted(BUGS))
def test_broken_solution_fails(name, assigned, tmp_path):
    question, good, bad = BUGS[name]
    nb = nbformat.read(assigned[name] / "autograder" / f"{name}.ipynb", as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and good in c.source]
    assert len(cells) == 1, f"{name}: the reference line {good!r} is not in exactly one cell"
    cells[0].source = cells[0].source.replace(good, bad)
    broken = tmp_path / f"{name}.ipynb"
    nbformat.write(nb, broken)
    scores = grade(assigned[name], broken, tmp_path / "results")
    print(f"{name} broken: { {q: f'{s}/{m}' for q, (s, m, _) in scores.items()} }")
    score, top, _ = scores[question]
    assert score < top, f"{name}: the broken {question} still gets {score}/{top}"
    assert sum(s for s, _, _ in scores.values()) < sum(m for _, m, _ in scores.values())
