"""The house's import rules (DESIGN.md, docs/architecture.md), read off the source with ``ast``.

Data flows one way: ``models -> weights -> runtime -> deploy -> tasks -> cli/serve``, with
``data/`` beside the model rooms (it imports no model code) and the shared leaves
(``errors``, ``_files``, ``_progress``, ``_quiet``, ``_malloc``) below everything. A room never imports
a room above it, tasks never import each other (what two share moves down a floor), and the
imports a module runs when it is loaded form no cycle. Every import counts, including those
inside functions: a lazy import is still a dependency. ``from effnet import __version__`` is
allowed everywhere (the package root reads it from the installed metadata, importing no room).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import effnet

PACKAGE = Path(effnet.__file__).resolve().parent

#: Each room's floor: a module may import its own room and rooms on lower floors only.
FLOORS = {
    "errors": 0, "_files": 0, "_progress": 0, "_quiet": 0, "_malloc": 0,
    "data": 1,
    "models": 2,
    "weights": 3,
    "runtime": 4,
    "deploy": 5,
    "options": 6, "tasks": 6,
    "serve": 7, "cli": 7,
    "__main__": 8,
}
#: Tasks that are one command spread over two entries (``tasks/train.py`` and its ``training/``).
TASK_OF = {"training": "train"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _imports(name: str, path: Path, top_level_only: bool = False, text: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, effnet module) for each import of ours in ``path`` (or in ``text`` as if it stood
    there); ``from pkg import mod`` names the submodule when ``mod`` is one."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text() if text is None else text, str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "effnet":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "effnet":
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in MODULES:
                    yield node.lineno, submodule
                elif not (target == "effnet" and alias.name == "__version__"):
                    yield node.lineno, target


def _room(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def _task(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 3 or parts[1] != "tasks":
        return None
    return TASK_OF.get(parts[2], parts[2])


def test_every_room_has_a_floor() -> None:
    """A new top-level module or room must be placed in the house before it can be checked."""
    rooms = {_room(module) for module in MODULES if module != "effnet"}
    assert rooms - set(FLOORS) == set()


def test_no_room_imports_a_room_above_it() -> None:
    upward = []
    for module, path in MODULES.items():
        if module == "effnet":
            continue  # the public API: resolves names from every room lazily, by string
        floor = FLOORS[_room(module)]
        for line, target in _imports(module, path):
            if target == "effnet" or FLOORS[_room(target)] > floor:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert upward == []


def test_data_imports_no_model_code() -> None:
    found = [f"{module} imports {target}" for module, path in MODULES.items() if _room(module) == "data"
             for _, target in _imports(module, path) if _room(target) not in ("data", "errors", "_files", "_progress")]
    assert found == []


def test_tasks_never_import_each_other() -> None:
    found = []
    for module, path in MODULES.items():
        task = _task(module)
        if task is None:
            continue
        for line, target in _imports(module, path):
            other = _task(target)
            if other is not None and other != task:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert found == []


def test_serve_imports_no_task() -> None:
    """serve is a command beside the tasks: what it shares with them lives below (options, runtime)."""
    found = [f"{module} imports {target}" for module, path in MODULES.items() if _room(module) == "serve"
             for _, target in _imports(module, path) if _room(target) == "tasks"]
    assert found == []


def test_module_level_imports_have_no_cycle() -> None:
    graph = {module: {target for _, target in _imports(module, path, top_level_only=True) if target != module}
             for module, path in MODULES.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(trail[trail.index(target):] + [target] if target in trail else [node, target])
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


@pytest.mark.parametrize("snippet, expected", [
    ("from ..deploy import cache", ["effnet.deploy.cache"]),
    ("from .. import __version__", []),
    ("import effnet.tasks.predict", ["effnet.tasks.predict"]),
    ("def f():\n    from ..serve.app import build_app", ["effnet.serve.app"]),
])
def test_the_import_reader_sees_every_form(snippet: str, expected: list[str]) -> None:
    """The rules above are only as good as the reader: relative, absolute and lazy imports."""
    path = PACKAGE / "runtime" / "example.py"
    found = [target for _, target in _imports(_module_name(path), path, text=snippet + "\n")]
    assert found == expected


def test_every_engine_module_is_one_registered_engine() -> None:
    """docs/architecture.md's engine recipe: ``runtime/NAME_engine.py`` + one ``ENGINES`` line,
    naming an ``Engine`` with a ``load`` classmethod (modules import their runtime lazily)."""
    import importlib

    from effnet.runtime import ENGINES
    from effnet.runtime.base import Engine

    modules = {f"effnet.runtime.{path.stem}" for path in (PACKAGE / "runtime").glob("*_engine.py")}
    targets = [spec.target.partition(":") for spec in ENGINES.values()]
    assert sorted(module for module, _, _ in targets) == sorted(modules)
    for module, _, attribute in targets:
        engine = getattr(importlib.import_module(module), attribute)
        assert issubclass(engine, Engine) and callable(engine.load)


def test_every_source_module_is_registered() -> None:
    """docs/architecture.md's source recipe: ``weights/sources/NAME.py`` defines ``SOURCE``,
    registered in ``SOURCES`` under its name."""
    import importlib

    from effnet.weights.sources import SOURCES

    names = {path.stem for path in (PACKAGE / "weights" / "sources").glob("*.py")} - {"__init__", "base"}
    for name in names:
        source = importlib.import_module(f"effnet.weights.sources.{name}").SOURCE
        assert SOURCES[source.name] is source
    assert len(SOURCES) == len(names)
