"""The layers, checked over the source of every module: the core knows nothing of Dagster or of the asset
layer, and no product module imports the test kit. An AST walk, so an import inside a function counts."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CORE, ASSETS = REPO_ROOT / "mmssr_core", REPO_ROOT / "mmssr_assets"
TESTING = CORE / "testing"


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) for every import statement, and every `importlib.import_module("...")` of a literal."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def _top(module: str) -> str:
    return module.split(".")[0]


def boundary_violations(files: list[Path], root: Path) -> list[str]:
    """Every import that crosses a layer the wrong way, as 'path:line imports module'."""
    bad = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        in_core = rel.startswith("mmssr_core/")
        in_testing = rel.startswith("mmssr_core/testing/")
        for line, module in imported_modules(ast.parse(path.read_text(), filename=str(path))):
            top = _top(module)
            if in_core and (top == "dagster" or top.startswith("dagster_") or top == "mmssr_assets"):
                bad.append(f"{rel}:{line} imports {module}")
            elif not in_testing and (module == "mmssr_core.testing" or module.startswith("mmssr_core.testing.")):
                bad.append(f"{rel}:{line} imports {module}")
    return bad


def product_files() -> list[Path]:
    return sorted(CORE.rglob("*.py")) + sorted(ASSETS.rglob("*.py"))


def test_every_module_respects_the_layers():
    files = product_files()
    assert len(files) > 100  # the walk really covers the packages
    assert boundary_violations(files, REPO_ROOT) == []


@pytest.mark.parametrize(
    ("rel", "source", "flagged"),
    [
        ("mmssr_core/x.py", "import dagster as dg", True),
        ("mmssr_core/x.py", "def f():\n    from dagster_celery import tags", True),
        ("mmssr_core/x.py", "from mmssr_assets.resources import default_scorer", True),
        ("mmssr_core/x.py", "import importlib\nimportlib.import_module('mmssr_assets.materialize')", True),
        ("mmssr_core/x.py", "from mmssr_core.testing.tiny_models import build", True),
        ("mmssr_core/x.py", "from mmssr_core import testing", True),
        ("mmssr_assets/x.py", "from mmssr_core.testing import faults", True),
        ("mmssr_core/testing/x.py", "from mmssr_core.testing.faults import kill", False),
        ("mmssr_assets/x.py", "import dagster as dg", False),
        ("mmssr_core/x.py", "import dagsterish\nfrom mmssr_core.store import Store", False),
    ],
)
def test_the_check_catches_each_kind_of_crossing(tmp_path, rel, source, flagged):
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source + "\n")
    assert bool(boundary_violations([path], tmp_path)) is flagged


def test_the_asset_layer_contributes_materialize_through_an_entry_point():
    """`mmssr materialize` is found through the `mmssr.commands` entry points, not by name in the core."""
    from mmssr_core.cli import COMMANDS, available_commands

    assert "materialize" not in COMMANDS
    commands = available_commands(with_help=False)
    assert commands.get("materialize", ("",))[0] == "mmssr_assets.commands.materialize", (
        "the installed metadata has no `mmssr.commands` entry point `materialize`: it is stale; "
        "reinstall with `pip install -e .` (or bash scripts/install.sh)"
    )


REPO_LOOKUP = re.compile(r"__file__\)\S*\.parent\.parent|__file__\)\S*\.parents\[|\.\./shared|shared/data")


def repository_lookups(files: list[Path], root: Path) -> list[str]:
    """Lines that find files by climbing out of the package (they break in an installed wheel)."""
    return [
        f"{p.relative_to(root).as_posix()}:{i}: {line.strip()}"
        for p in files
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if REPO_LOOKUP.search(line)
    ]


def test_no_module_looks_outside_its_package():
    assert repository_lookups(product_files(), REPO_ROOT) == []


def test_the_lookup_check_catches_a_climb(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text(
        "ROOT = Path(__file__).resolve().parent.parent\nX = Path(__file__).parents[2] / 'examples'\n"
        "OK = Path(__file__).with_name('t.jinja')\n"
    )
    assert len(repository_lookups([bad], tmp_path)) == 2


def bare_table_names(files: list[Path], root: Path) -> list[str]:
    """Store calls that name a table by a string literal instead of its constant in mmssr_core.schema."""
    import mmssr_core.schema as schema

    tables = {v for k, v in vars(schema).items() if k.endswith("_TABLE") and isinstance(v, str)}
    methods = {"read", "exists", "path", "scan", "partitions", "read_json", "write_json", "write", "table_dir"}
    bad = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in methods
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value in tables
            ):
                bad.append(
                    f"{path.relative_to(root).as_posix()}:{node.lineno} {node.func.attr}({node.args[0].value!r})"
                )
    return bad


def test_store_tables_are_named_by_their_constants():
    assert bare_table_names(product_files(), REPO_ROOT) == []


def test_the_table_name_check_catches_a_literal(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("st.read('raw_pool', s)\nst.exists(RAW_POOL_TABLE, s)\nd.read('unrelated')\n")
    assert [b.split(" ", 1)[1] for b in bare_table_names([bad], tmp_path)] == ["read('raw_pool')"]


def test_table_names_are_defined_only_in_the_schema():
    """`*_TABLE = "name"` appears in mmssr_core/schema.py and nowhere else in the product."""
    found = []
    for path in product_files():
        if path == CORE / "schema.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                found += [
                    f"{path.relative_to(REPO_ROOT)}:{node.lineno} {t.id}"
                    for t in node.targets
                    if isinstance(t, ast.Name) and t.id.endswith("_TABLE")
                ]
    assert found == []
