"""The package's layering (LAYOUT.md, issue 13), checked on the source with ``ast``.

    top          minigpt (the package __init__), minigpt.__main__, minigpt.cli, minigpt.bench
      ^
    experiments  minigpt.experiments.*     analysis, claims, report, story, reproduce, sweep, ...   --> theory
      ^
    interp       minigpt.interp.*          the toolkit: lens, attribution, ablation, patching, head scores, plots
      ^
    training     minigpt.training.*        the training loop, load_run
      ^
    fast         minigpt.fast.*            speed kernels, sharded steps, minigpt.Transformer (+ save/load)
      ^
    io           minigpt.io.*              the checkpoint file format (validates the data record with tasks)
      ^
    tasks        minigpt.tasks.*           data, baselines, presets               <-- theory
      ^
    nn           minigpt.nn.*              the textbook core: numpy + scipy only   <-- theory

``theory/`` stands beside the layers: it may import minigpt.tasks.*, minigpt.nn.* and the package top
(``import minigpt`` / ``from minigpt import Transformer``, to build planted models), nothing else of minigpt;
only experiments and the top may import theory.

Rules, one test each, every test listing ALL offenders as ``file:line``:
  a. layering: a module imports only its own layer or lower ones (function-level imports included);
     minigpt.nn imports no third-party package but numpy and scipy; the theory rule above.
  b. no import cycles among the imports that run when a module is imported (top level, not under
     ``if TYPE_CHECKING:``).
  c. no private names across modules: ``from X import _name``, ``X._name`` on an imported module, or a
     private module imported from outside its package. Dunder names are public.
  d. imports at the top: inside a def or class body only optional dependencies (OPTIONAL, which
     setup.cfg does not require) and OS-specific standard modules (PLATFORM) may be imported.
  e. the alias table ``minigpt.MOVED``: every old module path imports as the very module of its new path.

Dynamic imports (``importlib.import_module(name)``, code in strings) are not seen.
The checker (``scan`` and the rule functions) is tested on small synthetic packages first, so a clean
real tree means the rules found nothing, not that they cannot find anything.
"""
import ast
import configparser
import importlib
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = next(p for p in Path(__file__).resolve().parents if (p / "minigpt" / "__init__.py").is_file())

# ----------------------------------------------------------------------------- the architecture
# (layer name, module patterns), bottom to top; "pkg.*" is pkg and everything below it, else the exact module
LAYERS = [
    ("nn", ("minigpt.nn.*",)),
    ("tasks", ("minigpt.tasks.*",)),
    ("io", ("minigpt.io.*",)),
    ("fast", ("minigpt.fast.*",)),
    ("training", ("minigpt.training.*",)),
    ("interp", ("minigpt.interp.*",)),
    ("experiments", ("minigpt.experiments.*",)),
    ("top", ("minigpt", "minigpt.__main__", "minigpt.cli", "minigpt.bench")),
]
# packages beside the layers: what they may import of the layered package, and the lowest layer that may import them
SIDE_PACKAGES = {
    "theory": {"uses": ("minigpt", "minigpt.nn.*", "minigpt.tasks.*"), "used_from": "experiments"},
}
NN_THIRD_PARTY = {"numpy", "scipy"}  # LAYOUT.md: "numpy (+ scipy.special.erf) only"
# setup.cfg extras, never install_requires (checked below): may be imported inside a function. matplotlib and
# tqdm are in install_requires, so they are required like numpy, scipy and sympy and go at the top.
OPTIONAL = {"torch", "dask", "distributed"}
# standard modules that exist on some operating systems only (fcntl/resource: POSIX, msvcrt/winreg: Windows)
PLATFORM = {"fcntl", "msvcrt", "resource", "winreg"}
# the public modules of the flat tree before issue 13 (commit dd39206) that change path: each needs an alias
FLAT_MODULES = [
    "minigpt.baselines", "minigpt.baselines_ext", "minigpt.checkpoint", "minigpt.config", "minigpt.data",
    "minigpt.emergence", "minigpt.extensions", "minigpt.gradcheck", "minigpt.hooks", "minigpt.model",
    "minigpt.ops", "minigpt.optim", "minigpt.presets", "minigpt.refinement", "minigpt.reproduce",
    "minigpt.runner", "minigpt.shardpool", "minigpt.sweep", "minigpt.threads",
    "minigpt.interp.analysis", "minigpt.interp.claims", "minigpt.interp.report", "minigpt.interp.story",
]


# ----------------------------------------------------------------------------- the checker
@dataclass(frozen=True)
class Import:
    """One imported module of one import statement."""
    importer: str         # the module holding the statement
    target: str           # absolute name of the imported module
    names: tuple          # names taken from target (``from target import a, b``); () for a module import
    path: str             # file of the importer, relative to the scanned roots' parent
    line: int
    top_level: bool       # not inside a def or class body (a top-level if/try/with still counts)
    type_checking: bool   # under ``if TYPE_CHECKING:``: never executed

    def where(self):
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Access:
    """``x.name``: an attribute read on a module bound by an import (target: that module) or on an object
    other than self/cls (target: None)."""
    importer: str
    target: object
    name: str
    path: str
    line: int


@dataclass
class Graph:
    roots: set                                   # top package names scanned, e.g. {"minigpt", "theory"}
    modules: dict                                # module name -> file path (relative)
    packages: set                                # module names that are packages (an __init__.py)
    imports: list = field(default_factory=list)  # [Import]
    accesses: list = field(default_factory=list)  # [Access]
    defines: dict = field(default_factory=dict)   # module -> names it defines (def, class, assignment, self.x = ...)

    def internal(self, name):
        """True for a name inside a scanned package (an existing module or not, e.g. an old alias path)."""
        return name.split(".")[0] in self.roots


def _is_type_checking(test):
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _ModuleVisitor(ast.NodeVisitor):
    def __init__(self, graph, module, path):
        self.graph, self.module, self.path = graph, module, path
        self.depth = 0          # def/class bodies we are in
        self.type_checking = 0  # `if TYPE_CHECKING:` bodies we are in
        self.bound = {}         # local name -> module it was bound to by an import (file-wide; no scopes)

    def visit_FunctionDef(self, node):
        self.graph.defines[self.module].add(node.name)
        for child in node.decorator_list + [node.args] + ([node.returns] if node.returns else []):
            self.visit(child)  # decorators, defaults and annotations run at definition time
        self.depth += 1
        for stmt in node.body:
            self.visit(stmt)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        self.graph.defines[self.module].add(node.name)
        for child in node.decorator_list + node.bases + node.keywords:
            self.visit(child)
        self.depth += 1
        for stmt in node.body:
            self.visit(stmt)
        self.depth -= 1

    def visit_If(self, node):
        if not _is_type_checking(node.test):
            return self.generic_visit(node)
        self.type_checking += 1
        for stmt in node.body:
            self.visit(stmt)
        self.type_checking -= 1
        for stmt in node.orelse:
            self.visit(stmt)

    def _add(self, target, names, node):
        self.graph.imports.append(Import(self.module, target, tuple(names), self.path, node.lineno,
                                         self.depth == 0, self.type_checking > 0))

    def _resolve(self, module, level, node):
        if level == 0:
            return module
        package = self.module if self.module in self.graph.packages else self.module.rpartition(".")[0]
        parts = package.split(".")
        if level - 1 >= len(parts):
            raise ValueError(f"{self.path}:{node.lineno}: relative import beyond the top package")
        base = ".".join(parts[:len(parts) - (level - 1)])
        return f"{base}.{module}" if module else base

    def visit_Import(self, node):
        for alias in node.names:
            self._add(alias.name, (), node)
            if alias.asname:
                self.bound[alias.asname] = alias.name
            else:  # `import a.b.c` binds a
                self.bound[alias.name.split(".")[0]] = alias.name.split(".")[0]

    def visit_ImportFrom(self, node):
        base = self._resolve(node.module, node.level, node)
        names = []
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in self.graph.modules:  # `from pkg import submodule`: an edge to the submodule
                self._add(sub, (), node)
                self.bound[alias.asname or alias.name] = sub
            else:
                names.append(alias.name)
        if names:
            self._add(base, names, node)

    def visit_Name(self, node):
        if not isinstance(node.ctx, ast.Load):
            self.graph.defines[self.module].add(node.id)

    def visit_Attribute(self, node):
        if not isinstance(node.ctx, ast.Load):  # self._x = ..., obj.y = ...: a definition
            self.graph.defines[self.module].add(node.attr)
        chain, inner = [], node
        while isinstance(inner, ast.Attribute):
            chain.append(inner)
            inner = inner.value
        chain.reverse()  # innermost first: a.b.c is [a.b, a.b.c]
        members = chain
        if isinstance(inner, ast.Name) and inner.id in self.bound:
            module, members = self.bound[inner.id], []
            for i, link in enumerate(chain):  # walk down through submodules to the first non-module attribute
                if f"{module}.{link.attr}" in self.graph.modules:
                    module = f"{module}.{link.attr}"
                    continue
                if self.graph.internal(module) and module != self.module:
                    self.graph.accesses.append(Access(self.module, module, link.attr, self.path, link.lineno))
                members = chain[i + 1:]
                break
        elif isinstance(inner, ast.Name) and inner.id in ("self", "cls"):
            members = chain[1:]
        for link in members:
            if isinstance(link.ctx, ast.Load):
                self.graph.accesses.append(Access(self.module, None, link.attr, self.path, link.lineno))
        self.visit(inner)


def scan(*roots):
    """The import graph of the packages at the directories ``roots`` (every .py file below them)."""
    roots = [Path(r) for r in roots]
    graph = Graph(roots={r.name for r in roots}, modules={}, packages=set())
    files = {}
    for root in roots:
        for file in sorted(root.rglob("*.py")):
            rel = file.relative_to(root.parent)
            parts = list(rel.with_suffix("").parts)
            if any(not p.isidentifier() for p in parts):  # not importable (e.g. a script named my-tool.py)
                continue
            if parts[-1] == "__init__":
                parts.pop()
                graph.packages.add(".".join(parts))
            graph.modules[".".join(parts)] = rel.as_posix()
            graph.defines[".".join(parts)] = set()
            files[".".join(parts)] = file
    for module, file in sorted(files.items()):
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        _ModuleVisitor(graph, module, graph.modules[module]).visit(tree)
    return graph


# ----------------------------------------------------------------------------- the rules
def _by_place(violations):
    """Sorted by file, then line number ("a.py:7" before "a.py:11")."""
    return sorted(violations, key=lambda v: (v.split(":")[0], int(v.split(":")[1]), v))


def _matches(module, pattern):
    if pattern.endswith(".*"):
        return module == pattern[:-2] or module.startswith(pattern[:-1])
    return module == pattern


def layer_of(module, layers):
    """Index of the layer holding ``module``, or None."""
    return next((i for i, (_, patterns) in enumerate(layers) if any(_matches(module, p) for p in patterns)), None)


def _root_of(layers):
    return layers[0][1][0].split(".")[0]


def layering_violations(graph, layers):
    """Modules of the layered package in no layer, and imports of a higher layer or of no module of any layer."""
    root, names = _root_of(layers), [name for name, _ in layers]
    out = []
    for module, path in sorted(graph.modules.items()):
        if module.split(".")[0] == root and layer_of(module, layers) is None:
            out.append(f"{path}:1: {module} belongs to no layer")
    for imp in graph.imports:
        if imp.importer.split(".")[0] != root or imp.target.split(".")[0] != root:
            continue
        low, high = layer_of(imp.importer, layers), layer_of(imp.target, layers)
        if low is None:
            continue  # reported above
        if high is None:
            out.append(f"{imp.where()}: {imp.importer} imports {imp.target}, which is in no layer")
        elif high > low:
            out.append(f"{imp.where()}: {imp.importer} ({names[low]}) imports {imp.target} ({names[high]}), a higher layer")
    return _by_place(out)


def side_package_violations(graph, layers, sides):
    """Imports between the layered package and the packages beside it (``theory``) that ``sides`` does not allow."""
    root, names = _root_of(layers), [name for name, _ in layers]
    out = []
    for imp in graph.imports:
        src, dst = imp.importer.split(".")[0], imp.target.split(".")[0]
        if src in sides and dst == root and not any(_matches(imp.target, p) for p in sides[src]["uses"]):
            out.append(f"{imp.where()}: {imp.importer} imports {imp.target}; {src} may import only "
                       f"{', '.join(sides[src]['uses'])}")
        if src == root and dst in sides:
            lowest, layer = names.index(sides[dst]["used_from"]), layer_of(imp.importer, layers)
            if layer is None or layer < lowest:
                out.append(f"{imp.where()}: {imp.importer} imports {imp.target}; only layer "
                           f"{sides[dst]['used_from']} and above may import {dst}")
    return _by_place(out)


def third_party_violations(graph, layers, layer, allowed):
    """Imports by modules of ``layer`` of packages outside the scanned ones, the standard library and ``allowed``."""
    index = [name for name, _ in layers].index(layer)
    out = []
    for imp in graph.imports:
        top = imp.target.split(".")[0]
        if (layer_of(imp.importer, layers) == index and not graph.internal(imp.target)
                and top not in sys.stdlib_module_names and top not in allowed):
            out.append(f"{imp.where()}: {imp.importer} ({layer}) imports {imp.target}; allowed: {', '.join(sorted(allowed))}")
    return _by_place(out)


def _edges(graph):
    """module -> {imported module: the import} for the imports that run on import (top level, not TYPE_CHECKING)."""
    edges = {m: {} for m in graph.modules}
    for imp in graph.imports:
        if imp.top_level and not imp.type_checking and imp.target in graph.modules and imp.target != imp.importer:
            edges[imp.importer].setdefault(imp.target, imp)
    return edges


def import_cycles(graph):
    """One shortest cycle per strongly connected component of the executed-import graph, as a list of Imports."""
    edges = _edges(graph)
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(v):  # Tarjan (the graph has ~100 nodes: recursion is fine)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(edges):
        if v not in index:
            connect(v)
    cycles = []
    for component in components:  # breadth-first from the smallest name back to itself, inside the component
        start = min(component)
        came_from, frontier = {}, [start]
        while start not in came_from:
            nxt = []
            for v in frontier:
                for w in sorted(edges[v]):
                    if w in component and w not in came_from:
                        came_from[w] = edges[v][w]
                        nxt.append(w)
            frontier = nxt
        path, v = [], start
        while True:
            path.append(came_from[v])
            v = came_from[v].importer
            if v == start:
                break
        cycles.append(path[::-1])
    return sorted(cycles, key=lambda c: c[0].importer)


def format_cycle(cycle):
    return " -> ".join(f"{imp.importer} ({imp.where()})" for imp in cycle) + f" -> {cycle[0].importer}"


def _private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_name_violations(graph):
    """``from X import _name``, ``X._name``, private modules used from outside their package, and
    ``obj._name`` (obj not self/cls) for a ``_name`` this module does not define but another one does."""
    out = []
    for imp in graph.imports:
        if not graph.internal(imp.target) or imp.target == imp.importer:
            continue
        for name in imp.names:
            if _private(name):
                out.append(f"{imp.where()}: {imp.importer} imports the private name {name} of {imp.target}")
        parts = imp.target.split(".")
        for i, part in enumerate(parts):  # minigpt._x (or minigpt._x.y) is private to package minigpt
            owner = ".".join(parts[:i])
            if _private(part) and not _matches(imp.importer, owner + ".*"):
                out.append(f"{imp.where()}: {imp.importer} imports {imp.target}, private to package {owner}")
                break
    for acc in graph.accesses:
        if not _private(acc.name):
            continue
        if acc.target is not None:
            out.append(f"{acc.path}:{acc.line}: {acc.importer} uses the private name {acc.name} of {acc.target}")
        elif acc.name not in graph.defines[acc.importer]:
            owners = sorted(m for m, names in graph.defines.items() if acc.name in names)
            if owners:
                out.append(f"{acc.path}:{acc.line}: {acc.importer} uses the private attribute {acc.name} "
                           f"of an object (defined in {', '.join(owners)})")
    return _by_place(out)


def function_level_violations(graph, optional, platform=PLATFORM):
    """Imports inside a def or class body of anything but an optional dependency or an OS-specific module."""
    out = []
    for imp in graph.imports:
        top = imp.target.split(".")[0]
        if imp.top_level or top in optional or top in platform:
            continue
        kind = ("package module" if graph.internal(imp.target) else
                "standard library" if top in sys.stdlib_module_names else "required dependency")
        out.append(f"{imp.where()}: {imp.importer} imports {imp.target} inside a function ({kind})")
    return _by_place(out)


def alias_problems(moved, graph, layers, old_modules):
    """Old module paths of ``moved`` that do not import as the very module of their new path (or are missing)."""
    problems = [f"{old}: no alias in MOVED" for old in old_modules if old not in moved]
    for old, new in sorted(moved.items()):
        if old in graph.modules:
            problems.append(f"{old} -> {new}: {old} is still a file ({graph.modules[old]}), a second module")
        if new not in graph.modules or layer_of(new, layers) is None:
            problems.append(f"{old} -> {new}: {new} is no module of a layer")
        try:
            new_module, old_module = importlib.import_module(new), importlib.import_module(old)
        except ImportError as e:
            problems.append(f"{old} -> {new}: {type(e).__name__}: {e}")
            continue
        if old_module is not new_module:
            problems.append(f"{old} -> {new}: import_module gives two different module objects")
            continue
        namespace = {}
        exec(f"import {old} as m", namespace)
        if namespace["m"] is not new_module:
            problems.append(f"{old} -> {new}: `import {old} as m` is another module")
        public = [n for n, v in vars(new_module).items() if not n.startswith("_") and getattr(v, "__module__", None) == new]
        for name in public:  # `from minigpt.data import AffineRecurrence`
            namespace = {}
            exec(f"from {old} import {name}", namespace)
            if namespace[name] is not getattr(new_module, name):
                problems.append(f"{old} -> {new}: `from {old} import {name}` is not {new}.{name}")
    return problems


def _fail_if_any(violations, what):
    assert not violations, f"{len(violations)} {what}:\n  " + "\n  ".join(violations)


# ----------------------------------------------------------------------------- the checker on synthetic packages
def write_package(tmp_path, files):
    """Write ``{relative path: source}`` under tmp_path; return the directories of the top packages."""
    for rel, text in files.items():
        file = tmp_path / rel
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(textwrap.dedent(text))
    return sorted({tmp_path / Path(rel).parts[0] for rel in files})


TOY_LAYERS = [("low", ("pkg.low.*",)), ("high", ("pkg.high.*",)), ("top", ("pkg", "pkg.cli"))]


def test_checker_resolves_relative_and_absolute_imports(tmp_path):
    graph = scan(*write_package(tmp_path, {
        "pkg/__init__.py": "from . import low\nfrom .high.b import thing\n",
        "pkg/low/__init__.py": "",
        "pkg/low/a.py": "import numpy as np\n",
        "pkg/high/__init__.py": "",
        "pkg/high/b.py": "from ..low import a, helper\nfrom ..low.a import f as g\nimport pkg.low.a\nfrom . import *\n"
                         "def h():\n    from pkg import cli\n",
        "pkg/cli.py": "",
    }))
    got = {(i.importer, i.target, i.names, i.line, i.top_level) for i in graph.imports}
    assert got == {
        ("pkg", "pkg.low", (), 1, True),
        ("pkg", "pkg.high.b", ("thing",), 2, True),
        ("pkg.low.a", "numpy", (), 1, True),
        ("pkg.high.b", "pkg.low.a", (), 1, True),           # a submodule: an edge to it
        ("pkg.high.b", "pkg.low", ("helper",), 1, True),    # a name: an edge to the package
        ("pkg.high.b", "pkg.low.a", ("f",), 2, True),
        ("pkg.high.b", "pkg.low.a", (), 3, True),
        ("pkg.high.b", "pkg.high", ("*",), 4, True),
        ("pkg.high.b", "pkg.cli", (), 6, False),
    }
    assert graph.packages == {"pkg", "pkg.low", "pkg.high"}
    assert graph.modules["pkg.high.b"] == "pkg/high/b.py"


def test_checker_finds_a_two_module_cycle_with_its_path(tmp_path):
    graph = scan(*write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/model.py": "import os\nfrom .checkpoint import save\n",
        "pkg/checkpoint.py": "from . import model\n",
        "pkg/other.py": "from . import model\n",   # into the cycle, not part of it
    }))
    cycles = import_cycles(graph)
    assert [format_cycle(c) for c in cycles] == [
        "pkg.checkpoint (pkg/checkpoint.py:1) -> pkg.model (pkg/model.py:2) -> pkg.checkpoint"]


def test_checker_cycle_edges_are_the_executed_imports(tmp_path):
    """Function-level and TYPE_CHECKING imports close no cycle; TYPE_CHECKING imports still count as top level."""
    graph = scan(*write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from typing import TYPE_CHECKING\nfrom . import b\n",
        "pkg/b.py": "import typing\nif typing.TYPE_CHECKING:\n    from .a import A\nelse:\n    import json\n"
                    "def f():\n    from . import a\n",
        "pkg/c.py": "try:\n    import fast_json\nexcept ImportError:\n    from .b import f\n",
    }))
    by_line = {(i.importer, i.line): i for i in graph.imports}
    assert by_line["pkg.b", 3].type_checking and by_line["pkg.b", 3].top_level
    assert not by_line["pkg.b", 5].type_checking and by_line["pkg.b", 5].top_level  # the else branch runs
    assert not by_line["pkg.b", 7].top_level
    assert by_line["pkg.c", 2].top_level and by_line["pkg.c", 4].top_level   # try/except ImportError at the top
    assert import_cycles(graph) == []
    assert function_level_violations(graph, OPTIONAL) == ["pkg/b.py:7: pkg.b imports pkg.a inside a function (package module)"]


def test_checker_flags_private_names_across_modules(tmp_path):
    graph = scan(*write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "_x = 1\n__version__ = '1'\ndef _own(): return _x\n"
                    "class Model:\n    def __init__(self): self._state = 0\n    def _step(self): return self._state\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/b.py": "from ..a import _x, __version__\n",
        "pkg/sub/c.py": "import pkg.a\nfrom .. import a as mod\nimport numpy as np\n"
                        "y = pkg.a._own() + mod._x + mod.__name__.count('') + np._NoValue.__hash__()\n"
                        "def f(model):\n    return model._step() + model.cfg._state + model._local + model._exit\n"
                        "class Local:\n    _local = 1\n    def g(self): return self._step() + type(self)._local\n",
        "pkg/sub/_impl.py": "",
        "pkg/sub/d.py": "from . import _impl\n",   # private to pkg.sub: fine inside it
        "pkg/e.py": "from .sub import _impl\nimport pkg.sub._impl\n",
    }))
    assert private_name_violations(graph) == [
        "pkg/e.py:1: pkg.e imports pkg.sub._impl, private to package pkg.sub",
        "pkg/e.py:2: pkg.e imports pkg.sub._impl, private to package pkg.sub",
        "pkg/sub/b.py:1: pkg.sub.b imports the private name _x of pkg.a",
        "pkg/sub/c.py:4: pkg.sub.c uses the private name _own of pkg.a",
        "pkg/sub/c.py:4: pkg.sub.c uses the private name _x of pkg.a",
        "pkg/sub/c.py:6: pkg.sub.c uses the private attribute _state of an object (defined in pkg.a)",
        "pkg/sub/c.py:6: pkg.sub.c uses the private attribute _step of an object (defined in pkg.a)",
    ]


def test_checker_flags_a_lower_layer_importing_a_higher_one(tmp_path):
    graph = scan(*write_package(tmp_path, {
        "pkg/__init__.py": "from .high import b\n",
        "pkg/cli.py": "from .low import a\nfrom . import old\n",
        "pkg/old.py": "",                              # in no layer
        "pkg/low/__init__.py": "",
        "pkg/low/a.py": "import scipy.special\ndef f():\n    from ..high.b import g\n",   # upward, even lazily
        "pkg/high/__init__.py": "",
        "pkg/high/b.py": "from ..low.a import f\nimport matplotlib\n",
        "side/__init__.py": "",
        "side/s.py": "from pkg.low import a\nfrom pkg.high import b\nimport pkg\n",
        "pkg/high/c.py": "import side.s\n",          # below `top`: may not import the side package
    }))
    assert layering_violations(graph, TOY_LAYERS) == [
        "pkg/cli.py:2: pkg.cli imports pkg.old, which is in no layer",
        "pkg/low/a.py:3: pkg.low.a (low) imports pkg.high.b (high), a higher layer",
        "pkg/old.py:1: pkg.old belongs to no layer",
    ]
    sides = {"side": {"uses": ("pkg", "pkg.low.*"), "used_from": "top"}}
    assert side_package_violations(graph, TOY_LAYERS, sides) == [
        "pkg/high/c.py:1: pkg.high.c imports side.s; only layer top and above may import side",
        "side/s.py:2: side.s imports pkg.high.b; side may import only pkg, pkg.low.*",
    ]
    assert third_party_violations(graph, TOY_LAYERS, "high", {"numpy"}) == [
        "pkg/high/b.py:2: pkg.high.b (high) imports matplotlib; allowed: numpy"]
    assert third_party_violations(graph, TOY_LAYERS, "low", {"scipy"}) == []


def test_checker_flags_function_level_imports_except_optional_ones(tmp_path):
    graph = scan(*write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": """\
            import numpy as np
            def plot():
                import torch
                import torch.nn.functional as F
                from dask.distributed import Client
                import fcntl
                import numpy
                from tqdm.auto import tqdm
                import difflib
            class C:
                from . import b
                def m(self):
                    try:
                        import scipy
                    except ImportError:
                        pass
            """,
        "pkg/b.py": "",
    }))
    assert function_level_violations(graph, OPTIONAL) == [
        "pkg/a.py:7: pkg.a imports numpy inside a function (required dependency)",
        "pkg/a.py:8: pkg.a imports tqdm.auto inside a function (required dependency)",
        "pkg/a.py:9: pkg.a imports difflib inside a function (standard library)",
        "pkg/a.py:11: pkg.a imports pkg.b inside a function (package module)",
        "pkg/a.py:14: pkg.a imports scipy inside a function (required dependency)",
    ]


def test_checker_alias_table(tmp_path, monkeypatch):
    """An alias that is the module passes; a copy, a missing target, a leftover file and a missing key do not."""
    roots = write_package(tmp_path, {
        "aliaspkg_t13/__init__.py": """\
            import sys
            from .low import new as _new
            MOVED = {"aliaspkg_t13.old": "aliaspkg_t13.low.new", "aliaspkg_t13.copy": "aliaspkg_t13.low.new",
                     "aliaspkg_t13.gone": "aliaspkg_t13.low.gone"}
            sys.modules["aliaspkg_t13.old"] = _new
            """,
        "aliaspkg_t13/low/__init__.py": "",
        "aliaspkg_t13/low/new.py": "class Recurrence:\n    pass\ndef build():\n    return Recurrence()\n",
        "aliaspkg_t13/copy.py": "from .low.new import Recurrence, build\n",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        package = importlib.import_module("aliaspkg_t13")
        layers = [("low", ("aliaspkg_t13.low.*",)), ("top", ("aliaspkg_t13",))]
        problems = alias_problems(package.MOVED, scan(*roots), layers, ["aliaspkg_t13.old", "aliaspkg_t13.data"])
        assert problems == [
            "aliaspkg_t13.data: no alias in MOVED",
            "aliaspkg_t13.copy -> aliaspkg_t13.low.new: aliaspkg_t13.copy is still a file (aliaspkg_t13/copy.py), a second module",
            "aliaspkg_t13.copy -> aliaspkg_t13.low.new: import_module gives two different module objects",
            "aliaspkg_t13.gone -> aliaspkg_t13.low.gone: aliaspkg_t13.low.gone is no module of a layer",
            "aliaspkg_t13.gone -> aliaspkg_t13.low.gone: ModuleNotFoundError: No module named 'aliaspkg_t13.low.gone'",
        ]
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "aliaspkg_t13"]:
            del sys.modules[name]


# ----------------------------------------------------------------------------- the rules on the real tree
@pytest.fixture(scope="module")
def tree():
    return scan(REPO / "minigpt", REPO / "theory")


def test_the_tree_is_scanned(tree):
    """The checker sees the real package (guards every rule below against passing on an empty graph)."""
    assert "minigpt" in tree.packages and "theory" in tree.packages and "minigpt.cli" in tree.modules
    assert len(tree.imports) > 100


def test_layering(tree):
    _fail_if_any(layering_violations(tree, LAYERS), "imports against the layering of LAYOUT.md")


def test_nn_uses_numpy_and_scipy_only(tree):
    _fail_if_any(third_party_violations(tree, LAYERS, "nn", NN_THIRD_PARTY), "third-party imports in minigpt.nn")


def test_theory_uses_tasks_nn_and_the_package_top_only(tree):
    _fail_if_any(side_package_violations(tree, LAYERS, SIDE_PACKAGES), "imports between minigpt and theory against LAYOUT.md")


def test_no_import_cycles(tree):
    _fail_if_any([format_cycle(c) for c in import_cycles(tree)], "import cycles (top-level imports)")


def test_no_private_names_across_modules(tree):
    _fail_if_any(private_name_violations(tree), "uses of private names across modules")


def test_imports_at_the_top(tree):
    _fail_if_any(function_level_violations(tree, OPTIONAL), "imports inside functions of non-optional modules")


def test_optional_dependencies_are_not_required():
    """OPTIONAL may be imported lazily only because setup.cfg does not install it; everything it requires is hard."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    required = {re.split(r"[\s<>=!~\[;]", line.strip())[0].lower()
                for line in cfg["options"]["install_requires"].splitlines() if line.strip()}
    assert required >= {"numpy", "scipy", "sympy"}
    assert not OPTIONAL & required, f"{sorted(OPTIONAL & required)} are in install_requires: import them at the top"


def test_moved_modules_are_the_new_modules(tree):
    """``minigpt.MOVED`` {old module path: new module path}: the old path imports the very same module object."""
    import minigpt

    moved = getattr(minigpt, "MOVED", None)
    assert isinstance(moved, dict) and moved, "minigpt.MOVED (old module path -> new module path) is missing"
    _fail_if_any(alias_problems(moved, tree, LAYERS, FLAT_MODULES), "broken aliases in minigpt.MOVED")
