"""tests/ mirrors the packages: every module of minigpt/ and theory/ has a test file named after it, with a test in it.

    minigpt/nn/model.py  -> tests/nn/test_model.py        (a module of a subpackage: the folder of that name)
    minigpt/cli.py       -> tests/test_cli.py             (a top-level module: tests/ itself)
    theory/steps.py      -> tests/theory/test_steps.py

``__init__.py`` and ``__main__.py`` need none.  Files that guard a layer as a whole (tests/nn/test_forward_oracle.py,
tests/interp/test_planted_circuits.py, ...) sit in its folder beside these.  Every folder of tests/ is a package
(``__init__.py``: test files in two folders may share a name) and, but for tests/mutation/ and data folders such as
tests/training/golden/, is named after a package: minigpt's subpackages and theory.
"""
import ast
from pathlib import Path

REPO = next(p for p in Path(__file__).resolve().parents if (p / "minigpt" / "__init__.py").is_file())
PACKAGES = ("minigpt", "theory")
NEEDS_NO_TEST = {"__init__.py", "__main__.py"}
NOT_PACKAGES = {"mutation"}  # tests/mutation: the mutation runner and its bug lists (tests/mutation/README.md)


def expected_test_file(module: Path) -> Path:
    """The test file ``module`` (repository-relative) must have: minigpt/<pkg>/m.py -> tests/<pkg>/test_m.py,
    minigpt/m.py -> tests/test_m.py, theory/m.py -> tests/theory/test_m.py."""
    folders = module.parts[1:-1] if module.parts[0] == "minigpt" else module.parts[:-1]
    return Path("tests", *folders, f"test_{module.stem}.py")


def hidden(rel: Path) -> bool:
    """Caches and tools' folders: __pycache__, .pytest_cache, .hypothesis, ..."""
    return any(part == "__pycache__" or part.startswith(".") for part in rel.parts)


def modules(repo):
    return sorted(p.relative_to(repo) for pkg in PACKAGES for p in (repo / pkg).rglob("*.py")
                  if p.name not in NEEDS_NO_TEST and not hidden(p.relative_to(repo)))


def defines_a_test(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(n, ast.FunctionDef) and n.name.startswith("test_") for n in tree.body)


def missing_test_files(repo) -> list[str]:
    """One line per module without its test file, or whose test file defines no test."""
    out = []
    for module in modules(repo):
        want = expected_test_file(module)
        if not (repo / want).is_file():
            out.append(f"{module}: no {want}")
        elif not defines_a_test(repo / want):
            out.append(f"{module}: {want} defines no test_ function")
    return out


def folder_problems(repo) -> list[str]:
    """Folders of tests/ holding Python files but no ``__init__.py``, and folders named after no package."""
    names = {p.name for p in (repo / "minigpt").iterdir() if (p / "__init__.py").is_file()} | {"theory"}
    out = []
    for folder in sorted(p for p in (repo / "tests").rglob("*") if p.is_dir() and not hidden(p.relative_to(repo))):
        rel = folder.relative_to(repo)
        if any(folder.glob("*.py")) and not (folder / "__init__.py").is_file():
            out.append(f"{rel}: no __init__.py (test files of the same name in two folders would collide)")
        if len(rel.parts) == 2 and rel.name not in names | NOT_PACKAGES:
            out.append(f"{rel}: named after no package of minigpt/ or theory/ ({', '.join(sorted(names))})")
    return out


# ----------------------------------------------------------------------------- the checker can fail
def write(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_lists_every_module_without_its_test_file(tmp_path):
    write(tmp_path, {"minigpt/__init__.py": "", "minigpt/__main__.py": "", "minigpt/cli.py": "", "minigpt/nn/__init__.py": "",
                     "minigpt/nn/model.py": "", "minigpt/nn/ops.py": "", "theory/__init__.py": "", "theory/steps.py": "",
                     "tests/__init__.py": "", "tests/nn/__init__.py": "", "tests/theory/__init__.py": "",
                     "tests/nn/test_model.py": "def test_x():\n    pass\n",
                     "tests/nn/test_ops.py": "def helper():\n    pass\n",  # a test file without a test
                     "tests/test_model.py": "def test_x():\n    pass\n"})  # in the wrong folder: does not count
    assert missing_test_files(tmp_path) == [
        "minigpt/cli.py: no tests/test_cli.py",
        "minigpt/nn/ops.py: tests/nn/test_ops.py defines no test_ function",
        "theory/steps.py: no tests/theory/test_steps.py",
    ]
    write(tmp_path, {"tests/test_cli.py": "def test_x():\n    pass\n", "tests/nn/test_ops.py": "def test_x():\n    pass\n",
                     "tests/theory/test_steps.py": "def test_x():\n    pass\n"})
    assert missing_test_files(tmp_path) == []


def test_checker_flags_folders_that_are_no_package(tmp_path):
    write(tmp_path, {"minigpt/__init__.py": "", "minigpt/nn/__init__.py": "", "tests/__init__.py": "", "tests/nn/__init__.py": "",
                     "tests/misc/__init__.py": "", "tests/mutation/__init__.py": "", "tests/nn/data/x.json": "{}",
                     "tests/nn/more/test_x.py": "", "tests/.cache/x.py": "", "tests/nn/__pycache__/x.py": ""})
    assert folder_problems(tmp_path) == [
        "tests/misc: named after no package of minigpt/ or theory/ (nn, theory)",
        "tests/nn/more: no __init__.py (test files of the same name in two folders would collide)",
    ]


# ----------------------------------------------------------------------------- the repository
def test_the_modules_are_found():
    found = {str(m) for m in modules(REPO)}
    assert {"minigpt/cli.py", "minigpt/nn/model.py", "minigpt/fast/model.py", "theory/steps.py"} <= found
    assert not any(m.endswith(("__init__.py", "__main__.py")) for m in found)


def test_every_module_has_a_test_file_named_after_it():
    missing = missing_test_files(REPO)
    assert not missing, "modules without their test file:\n" + "\n".join(missing)


def test_tests_folders_mirror_the_packages():
    problems = folder_problems(REPO)
    assert not problems, "\n".join(problems)
