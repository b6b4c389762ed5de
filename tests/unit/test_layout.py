"""The layout's one-way dependencies: the record needs nothing above it, the agent never needs
the server (it runs inside the user's workers), and nothing below the server imports it."""

import ast
from pathlib import Path

import pytest

PULSE = Path(__file__).resolve().parents[2] / "pulse"


def imported(path: Path) -> set[str]:
    """The absolute module names ``path`` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(PULSE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize(("layer", "forbidden"), [
    ("record", ("pulse.agent", "pulse.server", "flask", "flask_socketio", "eventlet", "socketio")),
    ("agent", ("pulse.server", "flask", "flask_socketio", "eventlet", "socketio")),
])
def test_a_layer_imports_nothing_above_it(layer, forbidden):
    found = {f"{path.relative_to(PULSE)}: {name}" for path in (PULSE / layer).rglob("*.py")
             for name in imported(path) if name.startswith(forbidden)}
    assert found == set()


def test_only_the_command_line_and_app_py_may_import_the_server_from_outside_it():
    outside = [p for p in PULSE.rglob("*.py") if "server" not in p.relative_to(PULSE).parts]
    found = {str(p.relative_to(PULSE)) for p in outside
             if any(name.startswith("pulse.server") for name in imported(p))}
    assert found == {"cli.py"}
