"""The package's layering, checked statically (``ast``) on every module.

models/errors <- core <- dal <- logic <- handlers; nothing imports the devkit or the tests.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "tickets_ingest"
ROOT = Path(__file__).resolve().parents[2] / "functions" / "ingest" / PACKAGE
FORBIDDEN_EVERYWHERE = ("tickets_devkit", "tests")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # what it imports, dotted and absolute
    line: int


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` inside ``module``."""
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> list[Import]:
    """Every import in ``source`` (including ones inside functions or ``TYPE_CHECKING``)."""
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(Import(module, alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                # ``from tickets_ingest.dal import sql`` imports the module tickets_ingest.dal.sql.
                candidate = f"{base}.{alias.name}" if base else alias.name
                target = candidate if candidate in known else base
                found.append(Import(module, target, node.lineno))
    return found


def layer_of(name: str) -> str | None:
    """``core`` for tickets_ingest.core.keys, ``""`` for the package itself, None outside it."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    return parts[1] if len(parts) > 1 else ""


def violation(imp: Import) -> str | None:
    top = imp.target.split(".")[0]
    if top in FORBIDDEN_EVERYWHERE:
        return f"imports {top}"
    source, target = layer_of(imp.module), layer_of(imp.target)
    if target is None:
        return None
    if source == "errors":
        return f"errors imports nothing from {PACKAGE}"
    if source == "models" and target not in {"models", "errors"}:
        return "models may import only models and errors"
    if source == "core" and target not in {"core", "models", "errors"}:
        return "core may import only core, models and errors"
    if source == "dal" and target in {"logic", "handlers"}:
        return f"dal must not import {target}"
    if source == "logic" and target == "handlers":
        return "logic must not import handlers"
    return None


def all_modules(root: Path = ROOT) -> dict[str, tuple[Path, bool]]:
    return {
        module_name(path, root): (path, path.name == "__init__.py")
        for path in sorted(root.rglob("*.py"))
    }


def violations(root: Path = ROOT) -> list[str]:
    modules = all_modules(root)
    known = set(modules)
    problems: list[str] = []
    for module, (path, is_package) in modules.items():
        for imp in imports_of(path.read_text(encoding="utf-8"), module, is_package, known):
            reason = violation(imp)
            if reason is not None:
                where = f"{path.relative_to(root.parent)}:{imp.line}"
                problems.append(f"{where}: {module} imports {imp.target} ({reason})")
    return problems


def test_layering() -> None:
    problems = violations()
    assert not problems, "layering violations:\n  " + "\n  ".join(problems)


# --- the checker itself -------------------------------------------------------------------


def test_every_layer_is_seen() -> None:
    modules = all_modules()
    assert {layer_of(m) for m in modules} >= {
        "",
        "models",
        "errors",
        "settings",
        "core",
        "dal",
        "logic",
        "handlers",
    }
    assert "tickets_ingest.core.plan" in modules
    assert "tickets_ingest.dal" in modules


def test_real_imports_are_found() -> None:
    modules = all_modules()
    path, is_package = modules["tickets_ingest.core.plan"]
    targets = {
        i.target
        for i in imports_of(path.read_text(), "tickets_ingest.core.plan", is_package, set(modules))
    }
    assert {"tickets_ingest.core.keys", "tickets_ingest.models"} <= targets


@pytest.mark.parametrize(
    ("module", "is_package", "source", "target"),
    [
        ("tickets_ingest.core.plan", False, "from . import keys", "tickets_ingest.core.keys"),
        ("tickets_ingest.core.plan", False, "from .. import models", "tickets_ingest.models"),
        ("tickets_ingest.core.plan", False, "from ..dal.db import X", "tickets_ingest.dal.db"),
        ("tickets_ingest.core", True, "from .keys import X", "tickets_ingest.core.keys"),
        ("tickets_ingest.core", True, "from ..logic import sync", "tickets_ingest.logic.sync"),
        (
            "tickets_ingest.dal.s3",
            False,
            "import tickets_ingest.logic.sync as s",
            "tickets_ingest.logic.sync",
        ),
        (
            "tickets_ingest.dal.s3",
            False,
            "from tickets_ingest.dal import sql",
            "tickets_ingest.dal.sql",
        ),
        (
            "tickets_ingest.dal.s3",
            False,
            "from tickets_ingest import logic",
            "tickets_ingest.logic",
        ),
        (
            "tickets_ingest.dal.s3",
            False,
            "from tickets_ingest.dal.db import Database",
            "tickets_ingest.dal.db",
        ),
    ],
)
def test_resolution(module: str, is_package: bool, source: str, target: str) -> None:
    known = set(all_modules())
    assert [i.target for i in imports_of(source, module, is_package, known)] == [target]


@pytest.mark.parametrize(
    ("module", "target", "bad"),
    [
        ("tickets_ingest.errors", "tickets_ingest.models", True),
        ("tickets_ingest.errors", "enum", False),
        ("tickets_ingest.models", "tickets_ingest.errors", False),
        ("tickets_ingest.models", "tickets_ingest.core.keys", True),
        ("tickets_ingest.core.plan", "tickets_ingest.models", False),
        ("tickets_ingest.core.plan", "tickets_ingest.core.keys", False),
        ("tickets_ingest.core.plan", "tickets_ingest.settings", True),
        ("tickets_ingest.core.plan", "tickets_ingest.dal.db", True),
        ("tickets_ingest.core.plan", "tickets_ingest", True),
        ("tickets_ingest.core.plan", "boto3", False),
        ("tickets_ingest.dal.s3", "tickets_ingest.core.keys", False),
        ("tickets_ingest.dal.s3", "tickets_ingest.logic.sync", True),
        ("tickets_ingest.dal.s3", "tickets_ingest.handlers.cli", True),
        ("tickets_ingest.logic.sync", "tickets_ingest.dal.s3", False),
        ("tickets_ingest.logic.sync", "tickets_ingest.handlers.render", True),
        ("tickets_ingest.handlers.cli", "tickets_ingest.logic.sync", False),
        ("tickets_ingest.handlers.cli", "tickets_devkit.emulator", True),
        ("tickets_ingest.settings", "tests.support.rows", True),
        ("tickets_ingest.logic.sync", "tests", True),
        ("tickets_ingest.logic.sync", "testsuite", False),
    ],
)
def test_rules(module: str, target: str, bad: bool) -> None:
    assert (violation(Import(module, target, 1)) is not None) == bad


def test_violations_are_listed_readably(tmp_path: Path) -> None:
    root = tmp_path / PACKAGE
    (root / "core").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "errors.py").write_text("from tickets_ingest.models import X\n")
    (root / "core" / "__init__.py").write_text("")
    (root / "core" / "keys.py").write_text(
        "import re\n\ndef f():\n    from ..dal import db\n    import tickets_devkit\n"
    )
    problems = violations(root)
    assert problems == [
        "tickets_ingest/core/keys.py:4: tickets_ingest.core.keys imports tickets_ingest.dal "
        "(core may import only core, models and errors)",
        "tickets_ingest/core/keys.py:5: tickets_ingest.core.keys imports tickets_devkit "
        "(imports tickets_devkit)",
        "tickets_ingest/errors.py:1: tickets_ingest.errors imports tickets_ingest.models "
        "(errors imports nothing from tickets_ingest)",
    ]
