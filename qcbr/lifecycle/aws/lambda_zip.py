"""The Lambda deployment zip: the three handlers and exactly the qcbr modules they import.

The Lambda runtime brings the standard library, boto3 and botocore, nothing else, so the zip
holds only qcbr's pure-Python modules the handlers reach: every ``qcbr`` import of a module
(at module level or inside a function) is followed; a module that needs another third-party
package at import time is left out when only a function imports it lazily (the handlers never
call that function), and is an error when it would be imported at load time. The zip is
deterministic -- sorted entries, fixed timestamps and modes -- so the same code always gives the
same bytes, the same SHA-256 and the same S3 key, and CloudFormation updates the functions only
when the code changed.
"""
from __future__ import annotations

import ast
import hashlib
import io
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from qcbr.errors import StateError

HANDLERS = ("qcbr.serving.lambda_function", "qcbr.serving.start_training", "qcbr.lifecycle.aws.monitoring_schedule")
RUNTIME_PACKAGES = frozenset({"boto3", "botocore", "qcbr", "__future__"})
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
# get_backend() imports the local backend lazily; in Lambda QCBR_BACKEND is always aws
EXCLUDED = {"qcbr.lifecycle.local": "the Lambda runs the aws backend (QCBR_BACKEND=aws)"}


@dataclass
class LambdaPackage:
    data: bytes
    modules: list[str]
    files: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # lazily imported module -> why left out

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _root() -> Path:
    import qcbr

    return Path(qcbr.__file__).resolve().parent.parent


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _imports(tree: ast.Module, module: str, is_package: bool) -> tuple[set[str], set[str], set[str]]:
    """(qcbr modules at load time, qcbr modules in functions, third-party top names at load time)."""
    eager: set[str] = set()
    lazy: set[str] = set()
    third: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    parts = module.split(".")
                    base = parts if is_package else parts[:-1]
                    base = base[: len(base) - (child.level - 1)] if child.level > 1 else base
                    prefix = ".".join(base + ([child.module] if child.module else []))
                else:
                    prefix = child.module or ""
                names = [prefix] + [f"{prefix}.{a.name}" for a in child.names if a.name != "*"]
            for name in names:
                top = name.split(".")[0]
                if top == "qcbr":
                    (lazy if in_function else eager).add(name)
                elif not in_function and top and top not in sys.stdlib_module_names and top not in RUNTIME_PACKAGES:
                    if not _guarded(child, tree):
                        third.add(top)
            visit(child, nested)

    visit(tree, False)
    return eager, lazy, third


def _guarded(node: ast.AST, tree: ast.Module) -> bool:
    """An import inside ``try: ... except ImportError`` at module level is optional."""
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.Try) and any(node is n for body in stmt.body for n in ast.walk(body)):
            for handler in stmt.handlers:
                names = [handler.type] if not isinstance(handler.type, ast.Tuple) else list(handler.type.elts)
                if any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names):
                    return True
    return False


def collect(handlers: tuple[str, ...] = HANDLERS) -> tuple[list[str], dict[str, str]]:
    """The qcbr modules the handlers need, and the lazily imported ones left out (with why)."""
    root = _root()
    needed: set[str] = set()
    skipped: dict[str, str] = {}
    third_party: dict[str, set[str]] = {}
    info: dict[str, tuple[set[str], set[str], set[str]]] = {}

    def scan(module: str) -> tuple[set[str], set[str], set[str]] | None:
        if module not in info:
            path = _module_file(root, module)
            if path is None:
                return None  # "from qcbr.x import name" where name is not a module
            tree = ast.parse(path.read_text(), filename=str(path))
            info[module] = _imports(tree, module, path.name == "__init__.py")
        return info[module]

    def load_time_closure(module: str, seen: set[str]) -> set[str]:
        """Third-party packages importing ``module`` pulls in at load time (through qcbr too)."""
        if module in seen:
            return set()
        seen.add(module)
        found = scan(module)
        if found is None:
            return set()
        eager, _lazy, third = found
        out = set(third)
        for parent in _parents(module):
            out |= load_time_closure(parent, seen)
        for dep in eager:
            out |= load_time_closure(dep, seen)
        return out

    def add(module: str, lazily: bool) -> None:
        if module in needed or module in skipped or scan(module) is None:
            return
        for prefix, why in EXCLUDED.items():
            if lazily and (module == prefix or module.startswith(prefix + ".")):
                skipped[prefix] = why
                return
        missing = load_time_closure(module, set())
        if missing:
            if lazily:
                skipped[module] = f"needs {', '.join(sorted(missing))} (not in the Lambda runtime)"
                return
            third_party[module] = missing
            return
        needed.add(module)
        for parent in _parents(module):
            add(parent, lazily=False)
        eager, lazy, _third = info[module]
        for dep in sorted(eager):
            add(dep, lazily=False)
        for dep in sorted(lazy):
            add(dep, lazily=True)

    for handler in handlers:
        add(handler, lazily=False)
    if third_party:
        detail = "; ".join(f"{m} needs {', '.join(sorted(p))}" for m, p in sorted(third_party.items()))
        raise StateError(
            f"the Lambda handlers import modules that need packages the Lambda runtime lacks: {detail}. "
            "Move those imports into the functions that use them."
        )
    return sorted(needed), skipped


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def build(handlers: tuple[str, ...] = HANDLERS) -> LambdaPackage:
    root = _root()
    modules, skipped = collect(handlers)
    files = sorted({str(_module_file(root, m).relative_to(root)) for m in modules})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in files:
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            info.create_system = 3
            zf.writestr(info, (root / name).read_bytes(), compresslevel=9)
    return LambdaPackage(buf.getvalue(), modules, files, skipped)
