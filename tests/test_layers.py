"""The package's layers import only downward (README, "Architecture"):

    models, data  ->  surgery  ->  pretrained  ->  train  ->  analysis  ->  ssl  ->  experiments  ->  main.py

Each package may import itself and the packages below it; its `__main__` (its command line) belongs to it and obeys
the same rule; transfusion_jax/main.py sits on top. Imports are read from the source with `ast`, so an import
inside a function (a lazy import) cannot hide an upward edge.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "transfusion_jax"
ORDER = ("models", "data", "surgery", "pretrained", "train", "analysis", "ssl", "experiments")
ALLOWED = {name: set(ORDER[: ORDER.index(name)]) for name in ORDER}
ALLOWED["data"] = set()  # models and data are both the bottom: neither knows the other


def imported_packages(path: pathlib.Path) -> dict[str, int]:
    """transfusion_jax subpackage -> first line importing it, for every import statement in the file."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "transfusion_jax" and len(parts) > 1 and parts[1] in ORDER:
                found.setdefault(parts[1], node.lineno)
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_the_layers(path):
    package = path.relative_to(PACKAGE).parts[0]
    upward = {name: line for name, line in imported_packages(path).items() if name != package}
    upward = {name: line for name, line in upward.items() if name not in ALLOWED[package]}
    assert not upward, f"{path.relative_to(PACKAGE)} ({package}) imports {upward} (package: line), above it"


def test_every_package_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(ORDER)


def test_the_checker_sees_lazy_and_from_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from transfusion_jax import data\n"
        "def f():\n    from transfusion_jax.experiments import figures\n    import transfusion_jax.train.state\n"
    )
    assert set(imported_packages(source)) == {"data", "experiments", "train"}


def test_config_lib_only_sets_fields():
    """Building a config must not make data or checkpoints: no data generator, model or exporter in sight."""
    imports = {
        alias.name if isinstance(node, ast.Import) else f"{node.module}.{alias.name}"
        for node in ast.walk(ast.parse((PACKAGE / "train" / "config_lib.py").read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    forbidden = ("transfusion_jax.data.generate", "transfusion_jax.models", "transfusion_jax.train.export")
    assert not [name for name in imports if name.startswith(forbidden)]
