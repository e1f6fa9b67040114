"""Every public function and method of minigpt.nn and minigpt.interp has type hints (issue 13), checked with ``ast``.

Public: a module-level function or a method of a module-level class (nested classes included) whose name does not
start with ``_``, plus dunder methods (``__call__``, ``__getitem__``, ...: public by Python's own rules).  Classes
whose name starts with ``_`` and functions nested in functions (hook closures) are not public.  Each public
function needs an annotation on every parameter except a method's ``self`` / ``cls`` (the first parameter of a
method that is not a ``@staticmethod``) and ``*args`` / ``**kwargs``, and a return annotation, except
``__init__``.  Only the annotations' presence is checked; ``python -m mypy minigpt/nn minigpt/interp`` checks
what they say.
"""
import ast
import textwrap
from pathlib import Path

REPO = next(p for p in Path(__file__).resolve().parents if (p / "minigpt" / "__init__.py").is_file())
PACKAGES = ("minigpt/nn", "minigpt/interp")
# files left out, each with its reason: remove an entry once the file has hints
EXEMPT: dict[str, str] = {}  # path -> why its public functions may lack hints (none now)


def _is_public(name):
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__"))


def _is_staticmethod(fn):
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)


def _missing(fn, is_method):
    """What ``fn`` (a FunctionDef) lacks: the names of unannotated parameters, and "return"."""
    a = fn.args
    params = a.posonlyargs + a.args
    if is_method and params and not _is_staticmethod(fn) and params[0].arg in ("self", "cls"):
        params = params[1:]
    missing = [p.arg for p in params + a.kwonlyargs if p.annotation is None]
    if fn.returns is None and fn.name != "__init__":
        missing.append("return")
    return missing


def public_functions(source, path="<source>"):
    """``[(where, qualified name, missing)]`` for every public function of ``source``; ``missing`` lists the
    unannotated parameters and "return"."""
    out = []

    def visit(body, owner):
        for node in body:
            if isinstance(node, ast.ClassDef) and _is_public(node.name):
                visit(node.body, f"{owner}{node.name}.")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_public(node.name):
                out.append((f"{path}:{node.lineno}", owner + node.name, _missing(node, is_method=bool(owner))))

    visit(ast.parse(source, filename=path).body, "")
    return out


def missing_annotations(source, path="<source>"):
    """``["path:line: name lacks an annotation for x, return", ...]`` for the public functions of ``source``."""
    return [f"{where}: {name} lacks an annotation for {', '.join(missing)}"
            for where, name, missing in public_functions(source, path) if missing]


def _files():
    files = sorted(f for pkg in PACKAGES for f in (REPO / pkg).glob("*.py"))
    return [f for f in files if f.relative_to(REPO).as_posix() not in EXEMPT]


def test_checker_on_a_synthetic_module():
    """The checker finds each kind of gap and only those (so a clean real tree means no gaps, not a blind checker)."""
    source = textwrap.dedent("""\
        def ok(x: int, *args, y: str = "", **kwargs) -> int: ...
        def no_return(x: int): ...
        def no_param(x, y: int) -> None: ...
        def kwonly(*, k) -> None: ...
        def posonly(p, /) -> None: ...
        def _private(x): ...
        def outer() -> None:
            def inner(x): ...
        class Model:
            def __init__(self, cfg: int): ...
            def __call__(self, x): ...
            def _step(self, g): ...
            def forward(self, x: int) -> int: ...
            @staticmethod
            def make(self) -> None: ...
            @classmethod
            def from_dict(cls, d) -> "Model": ...
            class Inner:
                def run(self): ...
        class Bare:
            def __init__(self, store): ...
        class _Hidden:
            def run(self, x): ...
        def self(self) -> None: ...
        """)
    assert missing_annotations(source, "m.py") == [
        "m.py:2: no_return lacks an annotation for return",
        "m.py:3: no_param lacks an annotation for x",
        "m.py:4: kwonly lacks an annotation for k",
        "m.py:5: posonly lacks an annotation for p",
        "m.py:11: Model.__call__ lacks an annotation for x, return",
        "m.py:15: Model.make lacks an annotation for self",
        "m.py:17: Model.from_dict lacks an annotation for d",
        "m.py:19: Model.Inner.run lacks an annotation for return",
        "m.py:21: Bare.__init__ lacks an annotation for store",
        "m.py:24: self lacks an annotation for self",
    ]


def test_the_packages_are_scanned():
    """The real tree is read (guards the test below against passing on no files)."""
    files = _files()
    names = {f.relative_to(REPO).as_posix() for f in files}
    assert {"minigpt/nn/model.py", "minigpt/nn/hooks.py", "minigpt/interp/patching.py", "minigpt/interp/plots.py"} <= names
    assert sum(len(public_functions(f.read_text(encoding="utf-8"))) for f in files) > 50


def test_public_functions_have_type_hints():
    problems = [p for f in _files() for p in missing_annotations(f.read_text(encoding="utf-8"), f.relative_to(REPO).as_posix())]
    assert not problems, f"{len(problems)} public functions without full type hints:\n  " + "\n  ".join(problems)
