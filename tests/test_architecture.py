"""The package's shape, kept: imports run one way, modules and functions stay small.

The layers are those of docs/architecture.rst, bottom first; a module may
import only from its own layer's lower neighbours and below (within a layer,
in the order listed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "flask_sse_stream"

#: Every module, in an order in which each imports only modules before it.
ORDER = [
    "redact",
    "event",
    "config",
    "concurrency",
    "hangups",
    "quiet_log",
    "stats",
    "replay",
    "single_flight",
    "recent_reads",
    "group_commit",
    "access",
    "spread",
    "stream",
    "socket_writer",
    "fanout",
    "backends.base",
    "backends.memory",
    "backends.redis_counter",
    "backends.redis_scripts",
    "backends.redis_connection",
    "backends.redis_counts",
    "backends.redis_endings",
    "backends.redis_frames",
    "backends.redis_subscription",
    "backends.redis_recovery",
    "backends.redis_channels",
    "backends.redis_runner",
    "backends.redis_listener",
    "backends.redis",
    "backends",
    "core",
    "metrics",
    "gunicorn_worker",
    "gunicorn_http2",
    "stream_request",
    "request_body",
    "stream_body",
    "ws_frames",
    "ws_writer",
    "ws_transport",
    "stream_view",
    "endpoints",
    "probes",
    "cli",
    "blueprint",
    "extension",
    "server_app",
    "server_http",
    "server",
    "racket",
    "compat",
    "testing",
    "",  # __init__
]
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


def module_files() -> dict[str, Path]:
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def imported_modules(name: str, path: Path) -> set[str]:
    """The package's modules that ``name`` imports, type-only imports included."""
    package = name.rsplit(".", 1)[0] if path.name != "__init__.py" and "." in name else name
    if path.name != "__init__.py" and "." not in name:
        package = ""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".") if package else []
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            candidates = [f"{target}.{alias.name}".strip(".") for alias in node.names]
            if node.module:  # `from .x import y`: x itself; `from . import y`: only y
                candidates.append(target)
            found.update(candidate for candidate in candidates if candidate in ORDER)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flask_sse_stream"):
            found.add(node.module.removeprefix("flask_sse_stream").lstrip("."))
    return found - {name}


def test_every_module_has_a_place_in_the_order() -> None:
    assert sorted(module_files()) == sorted(ORDER)


@pytest.mark.parametrize("name", ORDER)
def test_imports_run_one_way(name: str) -> None:
    allowed = set(ORDER[: ORDER.index(name)])
    upward = imported_modules(name, module_files()[name]) - allowed
    assert not upward, f"{name or '__init__'} imports {sorted(upward)}, which come after it"


@pytest.mark.parametrize("name", ORDER)
def test_modules_and_functions_stay_small(name: str) -> None:
    source = module_files()[name].read_text()
    assert source.count("\n") <= MAX_MODULE_LINES, f"{name}: {source.count(chr(10))} lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{name}.{node.name}: {length} lines"
