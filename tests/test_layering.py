"""The shape of the house (STYLE.md): every import of the package points down the data flow.

    HTTP (web) -> parse (engine) -> ingest (dedup -> fold -> store) -> reads -> HTTP / CLI
                                                           store -> changes -> feed

Each module's imports are read with `ast`, those inside functions and under
`TYPE_CHECKING` too, and every arrow that points the wrong way is named.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flowtracker"
LEAVES = {"errors", "settings", "logs", ""}  # "" is the package itself (`__version__`)
ROOMS = ("engine", "store", "ingest", "reads", "feed", "scrive", "web")
# What each room may import besides itself and the leaves.
MAY_IMPORT = {
    "engine": set(),
    "store": {"engine"},
    "ingest": {"engine", "store"},
    "reads": {"engine", "store"},
    "feed": {"engine", "store", "reads"},
    "scrive": {"engine", "store", "ingest", "reads", "feed"},
    "web": {"engine", "store", "ingest", "reads", "feed", "scrive"},
    "cli": {*ROOMS, "cli"},
    "__main__": {*ROOMS, "cli"},
    "leaf": set(),
}
# Third-party libraries and the places that may use them.
LIBRARIES = {
    "transitions": ("engine.lifecycles",),
    "sqlite3": ("store",),
    "sqlite_utils": ("store",),
    "psycopg": ("store",),
    "psycopg_pool": ("store",),
    "starlette": ("web", "scrive"),
    "sse_starlette": ("web", "scrive"),
    "uvicorn": ("cli", "web", "scrive"),
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, name: str) -> Iterator[str]:
    """Every module `path` (the module `name` of the package) imports, as absolute names
    within the package (`engine.fold`) or top-level names outside it (`sqlite3`)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - node.level + 1]
                targets = [".".join(["flowtracker", *base, *filter(None, [node.module])])]
            else:
                targets = [node.module or ""]
        else:
            continue
        for target in targets:
            if target == "flowtracker" or target.startswith("flowtracker."):
                yield target.removeprefix("flowtracker").removeprefix(".")
            else:
                yield "!" + target.split(".")[0]


def room(name: str) -> str:
    head = name.split(".")[0]
    if head in ROOMS or head in ("cli", "__main__"):
        return head
    return "leaf"


def wrong_arrows(root: Path) -> list[str]:
    """`module imports X` for each import that STYLE.md's layering forbids."""
    found = []
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        mine = room(name)
        for target in imports(path, name):
            if target.startswith("!"):
                library = target[1:]
                places = LIBRARIES.get(library)
                if places is not None and not any(
                    name == place or name.startswith(place + ".") for place in places
                ):
                    found.append(f"flowtracker.{name} imports {library}")
                continue
            theirs = room(target)
            if theirs == "leaf" and target.split(".")[0] in LEAVES:
                continue
            if theirs == mine or theirs in MAY_IMPORT[mine]:
                continue
            found.append(f"flowtracker.{name} imports flowtracker.{target}")
    return found


def test_every_import_points_down_the_data_flow() -> None:
    assert wrong_arrows(PACKAGE) == []


def test_the_package_has_its_rooms_and_few_modules_at_the_root() -> None:
    rooms = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert set(rooms) <= set(ROOMS)
    at_root = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert at_root == ["__init__", "__main__", "cli", "errors", "logs", "settings"]


@pytest.mark.parametrize(
    ("module", "planted", "named"),
    [
        ("engine/fold.py", "import flowtracker.web",
         "flowtracker.engine.fold imports flowtracker.web"),
        ("engine/fold.py", "from ..store import protocol",
         "flowtracker.engine.fold imports flowtracker.store"),
        ("store/protocol.py", "if TYPE_CHECKING:\n    from flowtracker.ingest import pipeline",
         "flowtracker.store.protocol imports flowtracker.ingest"),
        ("reads/views.py", "def f():\n    import flowtracker.ingest.writer",
         "flowtracker.reads.views imports flowtracker.ingest.writer"),
        ("errors.py", "from flowtracker.engine import events",
         "flowtracker.errors imports flowtracker.engine"),
        ("reads/text.py", "import sqlite3", "flowtracker.reads.text imports sqlite3"),
        ("engine/fold.py", "import transitions", "flowtracker.engine.fold imports transitions"),
        ("ingest/pipeline.py", "from starlette.requests import Request",
         "flowtracker.ingest.pipeline imports starlette"),
        ("store/rows.py", "import uvicorn", "flowtracker.store.rows imports uvicorn"),
        ("scrive/link.py", "from flowtracker.web import app",
         "flowtracker.scrive.link imports flowtracker.web"),
    ],
)  # fmt: skip
def test_a_wrong_arrow_planted_in_a_copy_is_named(
    tmp_path: Path, module: str, planted: str, named: str
) -> None:
    copy = tmp_path / "flowtracker"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + "\n" + planted + "\n")
    assert wrong_arrows(copy) == [named]
