"""The core stays Sans-I/O: no module under omninudge_core imports I/O, clock or
randomness, and nothing reads the clock through ``datetime``. Checked on the AST, so
a string that merely mentions ``asyncio`` does not count and an aliased import does."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import omninudge_core

CORE_ROOT = Path(omninudge_core.__file__).parent

FORBIDDEN_MODULES = frozenset(
    {
        "asyncio",
        "socket",
        "ssl",
        "os",
        "pathlib",
        "time",
        "random",
        "secrets",
        "threading",
        "multiprocessing",
        "concurrent",
        "subprocess",
        "selectors",
        "signal",
        "io",
        "shutil",
        "tempfile",
        "http",
        "urllib",
        "sqlite3",
        "uuid",
        "logging",
        # adapter and server libraries
        "aiosqlite",
        "psycopg",
        "psycopg_pool",
        "redis",
        "httpx",
        "aioboto3",
        "boto3",
        "botocore",
        "PIL",
        "cryptography",
        "starlette",
        "uvicorn",
        "websockets",
        "jwt",
        "orjson",
        "prometheus_client",
        "omninudge_adapters",
        "omninudge_server",
    }
)

# Reading the clock or the environment through an otherwise allowed module.
FORBIDDEN_CALLS = frozenset(
    {"now", "utcnow", "today", "fromtimestamp", "time_ns", "monotonic", "urandom", "getenv"}
)
FORBIDDEN_BUILTINS = frozenset({"open", "input", "print", "exec", "eval", "__import__"})


def core_modules() -> list[Path]:
    return sorted(CORE_ROOT.rglob("*.py"))


def violations(source: str) -> list[str]:
    """Every forbidden import, clock call or I/O builtin in ``source``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"line {node.lineno}: from {node.module} import ...")
            if node.module == "importlib" or (node.module or "").startswith("importlib."):
                found.append(f"line {node.lineno}: dynamic import machinery")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in FORBIDDEN_CALLS:
                found.append(f"line {node.lineno}: call .{func.attr}()")
            elif isinstance(func, ast.Name) and func.id in FORBIDDEN_BUILTINS:
                found.append(f"line {node.lineno}: call {func.id}()")
    return found


def test_core_has_modules_to_check() -> None:
    assert len(core_modules()) >= 5


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(CORE_ROOT)))
def test_core_module_is_pure(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import os.path",
        "from time import monotonic",
        "import random as r",
        "from datetime import datetime\nx = datetime.now()",
        "import datetime\nx = datetime.datetime.utcnow()",
        "from omninudge_adapters.memory import storage",
        "import psycopg",
        "data = open('x').read()",
        "import importlib\nfrom importlib import import_module",
    ],
)
def test_checker_catches_impurity(source: str) -> None:
    """The checker itself can fail: each of these is caught."""
    assert violations(source) != []


def test_checker_ignores_strings_and_comments() -> None:
    assert violations("x = 'import asyncio'  # import os\nfrom datetime import datetime") == []
