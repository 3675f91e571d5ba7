"""The library's layout: layers that point one way, as the module map in flowsep/__init__.py says.

Read from the source with ast (nothing is imported): which flowsep module imports which, at the top of
the module or inside a function.
"""
import ast
import re
from pathlib import Path

import flowsep

ROOT = Path(flowsep.__file__).parent
MAX_FUNCTION_LEVEL_IMPORTS = 25


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, bool]]:
    """(flowsep module imported, at module level?) for every import statement of module ``name``."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    top = {id(n) for stmt in tree.body for n in ast.walk(stmt)
           if stmt is n or isinstance(stmt, (ast.If, ast.Try))}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for t in targets:
            if t in MODULES and t != name and not t.startswith(name + "."):
                found.append((t, id(node) in top))
    return found


def _map_order() -> list[str]:
    """The modules of the map in flowsep's docstring, in its order ("data/" stands for its package)."""
    order = []
    for line in flowsep.__doc__.split("The modules, in the order", 1)[1].splitlines()[2:]:
        m = re.match(r"\s{4}(\S[^ ]*(?:, \S+)?)\s{2,}", line)
        if not m:
            continue
        for word in m.group(1).split(", "):
            order.append("flowsep." + word.rstrip("/"))
    return order


def test_no_import_cycles():
    graph = {m: {t for t, _ in _imports(m)} for m in MODULES}
    state = {}

    def visit(m, stack):
        state[m] = "open"
        for t in graph[m]:
            assert state.get(t) != "open", "import cycle: " + " -> ".join(stack + [m, t])
            if t not in state:
                visit(t, stack + [m])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [])


def test_few_function_level_imports():
    local = [(m, t) for m in MODULES for t, top in _imports(m) if not top]
    third_party = 0
    for m, path in MODULES.items():
        tree = ast.parse(path.read_text())
        tops = {id(n) for stmt in tree.body for n in ast.walk(stmt) if stmt is n or isinstance(stmt, (ast.If, ast.Try))}
        third_party += sum(1 for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in tops)
    assert third_party <= MAX_FUNCTION_LEVEL_IMPORTS, (third_party, local)


def test_the_module_map_lists_every_module_and_layers_point_one_way():
    order = _map_order()
    packages = {m for m in MODULES if (ROOT.parent / m.replace(".", "/") / "__init__.py").is_file()} - {"flowsep"}
    rank = {}
    for i, m in enumerate(order):
        rank[m] = i
    for m in MODULES:
        owner = next((p for p in packages if m == p or m.startswith(p + ".")), m)
        if m != "flowsep":
            assert owner in rank, f"{m} is missing from the module map in flowsep/__init__.py"
    for m in MODULES:
        if m == "flowsep":
            continue
        mine = next((p for p in packages if m == p or m.startswith(p + ".")), m)
        for t, top in _imports(m):
            theirs = next((p for p in packages if t == p or t.startswith(p + ".")), t)
            if theirs == mine or t == "flowsep":
                continue
            assert rank[theirs] <= rank[mine], f"{m} imports {t}, which the module map puts below it"


# ---- the shape of the code (benchmarks/code_shape.py prints the same figures) ---------------------------
SEPARATION = {"flowsep.frozen", "flowsep.search", "flowsep.parts", "flowsep.render", "flowsep.separate"}
#: functions allowed over 60 lines: the synthetic set's musical and vocal rules (one rule after another, which
#: read best in order)
LONG_FUNCTIONS = {("flowsep.data.compose", "compose"), ("flowsep.data.compose", "_melody"),
                  ("flowsep.data.compose", "_drums"), ("flowsep.data.compose", "_harmony_part"),
                  ("flowsep.data.voice", "_sing_phrase")}


def _definitions():
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                yield name, node, node.end_lineno - start + 1


def test_classes_and_functions_stay_short():
    for module, node, lines in _definitions():
        if isinstance(node, ast.ClassDef):
            limit = 150 if module in SEPARATION else 200
            assert lines <= limit, f"class {node.name} of {module} has {lines} lines (at most {limit})"
        elif (module, node.name) not in LONG_FUNCTIONS:
            assert lines <= 60, f"{node.name} of {module} has {lines} lines (at most 60)"


def test_the_separator_takes_few_keywords():
    """Separator(priors, method, run-time options..., **settings of the method): at most 8 named keywords."""
    init = next(n for m, n, _ in _definitions() if m == "flowsep.separate" and n.name == "__init__")
    named = len(init.args.args) - 2 + len(init.args.kwonlyargs)   # less self and priors
    assert named <= 8, named
