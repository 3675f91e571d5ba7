"""The shape of the library's code: its longest classes and functions, and the Separator's keyword arguments.

Read with Python's ast from the source of flowsep/ (nothing is imported). A function's or class's length
is its line span, decorators included (``end_lineno - lineno + 1``); a method is counted as a function
too. Run it before and after a restructuring and compare::

    python benchmarks/code_shape.py                      # prints the table
    python benchmarks/code_shape.py --save after         # and writes benchmarks/results/code_shape_after.{md,json}

The separation modules (``SEPARATION``) have a tighter bound for their classes than the rest.
"""
from __future__ import annotations

import argparse
import ast
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flowsep"
RESULTS = Path(__file__).resolve().parent / "results"
CLASS_LIMIT, SEPARATION_CLASS_LIMIT, FUNCTION_LIMIT = 200, 150, 60
SEPARATION = ("flowsep/separate.py", "flowsep/search.py", "flowsep/parts.py", "flowsep/render.py",
              "flowsep/frozen.py")


def definitions() -> list[dict]:
    """Every class and function of flowsep/: {kind, name (Outer.inner), file, line, lines, keywords}."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text())

        def visit(node, outer):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = f"{outer}.{child.name}" if outer else child.name
                    start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                    row = {"kind": "class" if isinstance(child, ast.ClassDef) else "function", "name": name,
                           "file": rel, "line": child.lineno, "lines": child.end_lineno - start + 1}
                    if row["kind"] == "function":
                        a = child.args
                        row["keywords"] = len(a.args) + len(a.kwonlyargs) - (1 if outer and a.args and
                                                                               a.args[0].arg in ("self", "cls")
                                                                               else 0)
                        row["var_keywords"] = a.kwarg.arg if a.kwarg else None
                    found.append(row)
                    visit(child, name)
                else:
                    visit(child, outer)

        visit(tree, "")
    return found


def duplicates_rows() -> list[str]:
    """What the `duplicates` command finds in flowsep/ (its count of pairs, then a row a pair), or why nothing."""
    try:
        run = subprocess.run(["duplicates", "--repo", str(PACKAGE), "--most", "200"], capture_output=True,
                             text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [f"(duplicates not run: {type(e).__name__})"]
    return run.stdout.strip().splitlines() or ["(no output)"]


def summary(rows: list[dict]) -> dict:
    classes = sorted((r for r in rows if r["kind"] == "class"), key=lambda r: -r["lines"])
    functions = sorted((r for r in rows if r["kind"] == "function"), key=lambda r: -r["lines"])
    init = next((r for r in rows if r["name"] == "Separator.__init__" and r["file"] == "flowsep/separate.py"), None)
    return {
        "classes_over_%d" % CLASS_LIMIT: [f"{r['name']} ({r['file']}) {r['lines']}" for r in classes
                                          if r["lines"] > CLASS_LIMIT],
        "separation_classes_over_%d" % SEPARATION_CLASS_LIMIT: [
            f"{r['name']} ({r['file']}) {r['lines']}" for r in classes
            if r["file"] in SEPARATION and r["lines"] > SEPARATION_CLASS_LIMIT],
        "classes_over_150": sum(r["lines"] > 150 for r in classes),
        "functions_over_%d" % FUNCTION_LIMIT: [f"{r['name']} ({r['file']}:{r['line']}) {r['lines']}"
                                               for r in functions if r["lines"] > FUNCTION_LIMIT],
        "longest_classes": [f"{r['name']} ({r['file']}) {r['lines']}" for r in classes[:8]],
        "longest_functions": [f"{r['name']} ({r['file']}) {r['lines']}" for r in functions[:12]],
        "most_keywords": [f"{r['name']} ({r['file']}) {r['keywords']}" + (f" + **{r['var_keywords']}"
                                                                          if r["var_keywords"] else "")
                          for r in sorted(functions, key=lambda r: -r["keywords"])[:8]],
        "separator_init_keywords": None if init is None else init["keywords"] - 1,  # less `priors`, positional
        "separator_init_var_keywords": None if init is None else init["var_keywords"],
        "duplicates": duplicates_rows(),
    }


def markdown(s: dict, label: str) -> str:
    lines = [f"# Code shape of flowsep/ ({label})", "", "Measured by `python benchmarks/code_shape.py` "
             "(Python's ast; a length is a line span, decorators included).", ""]
    for key, value in s.items():
        if isinstance(value, list):
            lines.append(f"- **{key}** ({len(value)}):")
            lines += [f"  - {v}" for v in value] or ["  - none"]
        else:
            lines.append(f"- **{key}**: {value}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--save", metavar="LABEL", default=None,
                    help="write benchmarks/results/code_shape_LABEL.md and .json")
    args = ap.parse_args()
    s = summary(definitions())
    text = markdown(s, args.save or "now")
    print(text)
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"code_shape_{args.save}.md").write_text(text)
        (RESULTS / f"code_shape_{args.save}.json").write_text(json.dumps(s, indent=1) + "\n")


if __name__ == "__main__":
    main()
