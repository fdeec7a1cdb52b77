"""Import layering, checked statically (parsed with ast, nothing imported): no upward import
between the layers of docs/ARCHITECTURE.md, and no import cycle between modules.

Every import counts, deferred ones inside functions included (they are still dependencies
and still cycles, only later); imports under ``if TYPE_CHECKING:`` do not (never run).
"""

from __future__ import annotations

import ast
import textwrap
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "splatfield"
# folder -> layer; the folders are the packages splatfield.<folder> (pyproject's package-dir)
LAYERS = {"cuda": 0, "render": 1, "scenes": 2, "data": 2, "apps": 3}


@dataclass
class Module:
    name: str
    file: str  # relative to the root scanned
    is_package: bool
    tree: ast.Module
    defined: set[str] = field(default_factory=set)  # bound at top level by def/class/assignment
    reexports: dict[str, str] = field(default_factory=dict)  # name imported at top level -> its module


@dataclass(frozen=True)
class Import:
    src: str
    file: str
    line: int
    target: str  # the project module this resolves to
    name: str | None  # `from target import name` where name is not a submodule of target


def scan(root: Path) -> tuple[dict[str, Module], list[Import]]:
    """The project's modules under ``root`` and every import between them."""
    modules: dict[str, Module] = {}
    for folder in LAYERS:
        for path in sorted((root / folder).rglob("*.py")) if (root / folder).is_dir() else []:
            rel = path.relative_to(root)
            parts = [PREFIX, *rel.with_suffix("").parts]
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            modules[name] = Module(name, rel.as_posix(), is_package, ast.parse(path.read_text(), str(rel)))
    imports = []
    for mod in modules.values():
        for node in _import_nodes(mod.tree):
            imports += [Import(mod.name, mod.file, node.lineno, t, n) for t, n in resolve(modules, mod, node)]
        for node in mod.tree.body:
            mod.defined |= _bound_names(node)
            if isinstance(node, ast.ImportFrom):
                for alias, (target, _) in zip(node.names, resolve(modules, mod, node, keep_unresolved=True)):
                    if target is not None:
                        mod.reexports[alias.asname or alias.name] = target
    return modules, imports


def _bound_names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return set()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    skip = set()  # nodes under `if TYPE_CHECKING:` (its else branch does run)
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skip]


def _longest_module(modules: dict[str, Module], dotted: str) -> str | None:
    parts = dotted.split(".")
    return next((m for i in range(len(parts), 0, -1) if (m := ".".join(parts[:i])) in modules), None)


def resolve(modules: dict[str, Module], mod: Module, node: ast.Import | ast.ImportFrom,
            keep_unresolved: bool = False) -> list[tuple[str | None, str | None]]:  # fmt: skip
    """(project module, name taken from it or None) per alias; non-project aliases dropped
    (or kept as (None, None) with ``keep_unresolved``, to stay aligned with node.names)."""
    out: list[tuple[str | None, str | None]] = []
    if isinstance(node, ast.Import):
        out = [(_longest_module(modules, a.name), None) for a in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the package holding mod, up level-1 more
            pkg = mod.name.split(".") if mod.is_package else mod.name.split(".")[:-1]
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([node.module] if node.module else []))
        for a in node.names:
            sub = f"{base}.{a.name}"
            if a.name != "*" and sub in modules:  # a submodule or subpackage
                out.append((sub, None))
            else:
                target = _longest_module(modules, base)
                out.append((target, a.name if target == base and a.name != "*" else None))
    return out if keep_unresolved else [r for r in out if r[0] is not None]


# ----------------------------------------------------------------------------- rules


def _top(module: str) -> str:
    return module.split(".")[1]


def _rule(src: str, dst: str) -> str | None:
    """Why the top package ``src`` may not import ``dst``, or None."""
    if src == dst:
        return None
    if dst == "apps":
        return "nothing imports apps except apps"
    if {src, dst} == {"scenes", "data"}:
        return "data sits beside scenes: neither imports the other"
    if src == "data" and dst == "cuda":
        return "data imports only render, not cuda directly"
    if LAYERS[dst] > LAYERS[src]:
        return f"upward: {src} is layer {LAYERS[src]}, {dst} layer {LAYERS[dst]}"
    return None


def layer_violations(imports: list[Import]) -> list[tuple[str, int, str, str]]:
    """(file, line, imported module, why), sorted and without duplicates."""
    return sorted({(i.file, i.line, i.target, why) for i in imports if (why := _rule(_top(i.src), _top(i.target)))})


def graph_of(modules: dict[str, Module], imports: list[Import]) -> dict[str, dict[str, list[Import]]]:
    """module -> imported module -> the imports making that edge."""
    graph: dict[str, dict[str, list[Import]]] = {m: {} for m in modules}
    for imp in imports:
        target = imp.target
        if imp.src.startswith(target + "."):
            # An edge to the __init__ of a package containing the module is ignored: an __init__
            # re-exporting its submodules is a facade, not a dependency. But a name the __init__
            # defines itself runs there, so that edge stays (with the __init__ -> submodule edge
            # it is a real cycle), and a re-exported name counts as an import of its origin.
            pkg = modules[target]
            target = target if imp.name in pkg.defined else pkg.reexports.get(imp.name or "")
        if target is not None and target != imp.src:
            graph[imp.src].setdefault(target, []).append(imp)
    return graph


def strongly_connected(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; the components with more than one module, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    work: list = []  # (module, its remaining edges): the depth-first path

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        work.append((v, iter(graph[v])))

    for root in graph:
        if root in index:
            continue
        visit(root)
        while work:
            v, edges = work[-1]
            for w in edges:
                if w not in index:
                    visit(w)
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while not comp or comp[-1] != v:
                        comp.append(stack.pop())
                        on_stack.discard(comp[-1])
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return sorted(found)


def _shortest_cycle(graph: dict[str, dict[str, list[Import]]], comp: list[str]) -> list[str]:
    """One shortest cycle through comp[0] (breadth first), to read alongside the edge list."""
    start, members = comp[0], set(comp)
    prev: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while (p := prev[path[-1]]) is not None:
                    path.append(p)
                return [*reversed(path), start]
            if w in members and w not in prev:
                prev[w] = v
                queue.append(w)
    raise AssertionError(f"no cycle through {start}")


def cycle_reports(graph: dict[str, dict[str, list[Import]]]) -> list[tuple[list[str], str]]:
    """(modules, text) per import cycle: one cycle spelt out, then every import inside it."""
    out = []
    for comp in strongly_connected(graph):
        edges = sorted({(i.file, i.line, w) for v in comp for w, imps in graph[v].items() if w in comp for i in imps})
        short = " -> ".join(m.removeprefix(PREFIX + ".") for m in _shortest_cycle(graph, comp))
        text = f"cycle of {len(comp)} modules ({short}):\n" + "\n".join(f"  {f}:{n} imports {w}" for f, n, w in edges)
        out.append((comp, text))
    return out


# ----------------------------------------------------------------------------- the project


@pytest.fixture(scope="module")
def project() -> tuple[dict[str, Module], list[Import]]:
    return scan(ROOT)


@pytest.mark.parametrize("package", list(LAYERS))
def test_no_upward_import(project, package):
    bad = [v for v in layer_violations(project[1]) if v[0].split("/")[0] == package]
    assert not bad, f"{len(bad)} imports break the layers (docs/ARCHITECTURE.md):\n" + "\n".join(
        f"  {f}:{n} imports {m} ({why})" for f, n, m, why in bad
    )


@pytest.mark.parametrize("package", list(LAYERS))
def test_no_import_cycle(project, package):
    found = [text for comp, text in cycle_reports(graph_of(*project)) if any(_top(m) == package for m in comp)]
    assert not found, f"{len(found)} import cycles through {package}/:\n" + "\n".join(found)


def _command_modules() -> set[str]:
    from splatfield.apps import cli

    return {f"splatfield.apps{m}" for m in cli.HANDLERS.values()}


def test_no_command_imports_another(project):
    """A command module (apps/<command>.py, apps/bench/<command>.py) holds its options and
    handler; what two commands share lives in a module of its own."""
    commands = _command_modules()
    assert len(commands) >= 11 and commands <= set(project[0])
    bad = [f"{i.file}:{i.line} imports {i.target}" for i in project[1]
           if i.src in commands and i.target in commands and i.src != i.target]  # fmt: skip
    assert not bad, "\n".join(bad)


def test_parsing_the_command_line_imports_no_torch():
    """``splatfield --help`` and parse errors answer without importing torch (seconds on a CPU)."""
    import subprocess
    import sys

    code = ("import sys; from splatfield.apps import cli; "
            "cmd = cli.parse(['train', 'd', '--strategy', 'steepest', '--steps', '5', '--adc.refine-every', '50']); "
            "heavy = [m for m in ('torch', 'numpy', 'viser', 'pycolmap') if m in sys.modules]; "
            "print(type(cmd).__name__, heavy)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Train []"


def test_scanner_sees_the_tree(project, capsys):
    """The checker reads the real tree (absolute, relative and deferred imports alike); prints what it finds."""
    modules, imports = project
    assert {_top(m) for m in modules} == set(LAYERS)
    graph = graph_of(modules, imports)
    for src, dst in [
        ("splatfield.render.rasterize", "splatfield.render._autograd"),  # deferred, `from . import x`
        ("splatfield.render.rasterize", "splatfield.render._ext"),
        ("splatfield.render._ext", "splatfield.cuda"),  # absolute, from a package
        ("splatfield.data.dataset", "splatfield.render.camera"),
    ]:
        assert dst in graph[src], f"{src} -> {dst} not found"
    with capsys.disabled():
        print(f"\n{len(modules)} modules, {sum(map(len, graph.values()))} import edges")
        for f, n, m, why in layer_violations(imports):
            print(f"layer: {f}:{n} imports {m} ({why})")
        for _, text in cycle_reports(graph):
            print(text)


# ----------------------------------------------------------------------------- the checker itself


def _tree(root: Path, files: dict[str, str]) -> tuple[dict[str, Module], list[Import]]:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    for folder in LAYERS:  # every folder a package
        (root / folder).mkdir(exist_ok=True)
        (root / folder / "__init__.py").touch()
    return scan(root)


def test_resolver(tmp_path):
    modules, imports = _tree(tmp_path, {
        "render/camera.py": "class Cameras: ...\n",
        "scenes/strategies/adc.py": """\
            from typing import TYPE_CHECKING
            from .. import ops
            from ..ops import append
            from splatfield.render import Cameras, camera
            import splatfield.render.camera, numpy
            if TYPE_CHECKING:
                from splatfield.apps import cli
            else:
                from splatfield import data
            """,
        "scenes/ops.py": "def append(): ...\n",
    })  # fmt: skip
    got = {(i.line, i.target, i.name) for i in imports if i.src == "splatfield.scenes.strategies.adc"}
    assert got == {
        (2, "splatfield.scenes.ops", None),
        (3, "splatfield.scenes.ops", "append"),
        (4, "splatfield.render", "Cameras"),
        (4, "splatfield.render.camera", None),
        (5, "splatfield.render.camera", None),
        (9, "splatfield.data", None),
    }


def test_layer_violations_found(tmp_path):
    _, imports = _tree(tmp_path, {
        "render/camera.py": "import splatfield.cuda\n",
        "render/bad.py": "def f():\n    from splatfield.scenes import trainer\n",  # deferred, upward
        "scenes/trainer.py": """\
            from typing import TYPE_CHECKING
            from splatfield.render import camera
            if TYPE_CHECKING:
                from splatfield.data import loader
            from ..data import loader
            """,
        "data/loader.py": """\
            from splatfield.render import camera
            import splatfield.cuda
            from splatfield.apps import cli
            """,
        "apps/cli.py": "from splatfield import data, scenes, render, cuda\nfrom . import cli2\n",
    })  # fmt: skip
    assert [v[:3] for v in layer_violations(imports)] == [
        ("data/loader.py", 2, "splatfield.cuda"),
        ("data/loader.py", 3, "splatfield.apps.cli"),
        ("render/bad.py", 2, "splatfield.scenes.trainer"),
        ("scenes/trainer.py", 5, "splatfield.data.loader"),
    ]


def test_cycles_found(tmp_path):
    modules, imports = _tree(tmp_path, {
        # a name defined in the __init__ that imports the submodule: a real cycle
        "render/__init__.py": "from .a import A\nfrom .b import f\nHELPER = 1\n",
        "render/a.py": "class A: ...\n",
        "render/b.py": "def f():\n    from . import HELPER\n",
        # only the facade: no cycle
        "render/c.py": "from . import A\nfrom splatfield.render import a\nimport splatfield.render\n",
        # two submodules, one import deferred: a cycle
        "scenes/x.py": "from .y import Y\nclass X: ...\n",
        "scenes/y.py": "class Y: ...\ndef g():\n    from .x import X\n",
        "scenes/strategies/__init__.py": "from .s import S\n",
        "scenes/strategies/s.py": "from .. import x\nclass S: ...\n",
        # two submodules importing each other's names through the facade: a cycle
        "data/__init__.py": "from .p import P\nfrom .q import Q\n",
        "data/p.py": "from . import Q\nclass P: ...\n",
        "data/q.py": "class Q: ...\ndef h():\n    from . import P\n",
    })  # fmt: skip
    graph = graph_of(modules, imports)
    assert set(graph["splatfield.render.c"]) == {"splatfield.render.a"}
    assert strongly_connected(graph) == [
        ["splatfield.data.p", "splatfield.data.q"],
        ["splatfield.render", "splatfield.render.b"],
        ["splatfield.scenes.x", "splatfield.scenes.y"],
    ]
    (_, text), *_ = cycle_reports(graph)
    assert "data.p -> data.q -> data.p" in text and "data/q.py:3 imports splatfield.data.p" in text
