"""The layout's import rules (docs/DEVELOPING.md), checked on the source so a change that breaks one
fails here rather than in review:

- core knows no adapter: nothing in core/ imports bot/, channels/ or the composition root (cheshire/);
- one adapter per vendor SDK: each SDK is imported only by the modules `SDK_ADAPTERS` allows;
- adapters are handed what they need: nothing under bot/ or channels/ imports the composition root,
  except the entry point `python -m bot` (bot/__main__.py), which runs it;
- no import cycles among the application's modules (bot/admin.py, admin_email.py, notifier.py,
  notify_jobs.py, runtime.py and setup.py once formed one).

Every import counts, wherever it is written: module level, inside a function, under TYPE_CHECKING
(a type-only import is still a dependency of the design, and it is how cycles hide). Files are parsed
with `ast`, never imported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPLICATION = ("core", "bot", "channels", "cheshire", "migrations")
COMPOSITION_ROOT = "cheshire"
ENTRY_POINTS = frozenset({"bot.__main__"})  # `python -m bot` builds and runs the composition root

# The one place that says where each vendor SDK may be imported: SDK (a top-level name or a dotted
# prefix) -> the modules or packages allowed to import it. An empty tuple: not used yet; the issue
# that brings the SDK in names its adapter module here.
SDK_ADAPTERS: Mapping[str, tuple[str, ...]] = {
    "anthropic": ("core.llm.anthropic_provider",),
    "openai": ("core.llm.openai_provider",),
    "googleapiclient": ("core.calendar.google",),
    "google": ("core.calendar.google",),  # google.oauth2, google.auth
    "aioboto3": ("core.storage",),
    "boto3": ("core.storage",),
    "botocore": ("core.storage",),
    "stripe": ("core.payments.stripe_adapter",),
    "fal_client": ("core.previews.fal",),
    "aiogram": ("bot",),  # the whole Telegram adapter, and nothing else
    "aiosmtplib": ("channels.email.sender",),
    # n8n and Twenty have no SDK: httpx is their client, one adapter each.
    "httpx": ("core.integrations.n8n", "core.integrations.twenty"),
}


@dataclass(frozen=True, slots=True)
class Violation:
    module: str
    line: int
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.imported}: {self.rule}"


def within(name: str, prefix: str) -> bool:
    """`name` is the module or package `prefix`, or inside it."""
    return name == prefix or name.startswith(prefix + ".")


def imported_names(module: str, source: str, *, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every import in `source`, at any depth. `from a import b` yields `a` and
    `a.b` (b may be a submodule); relative imports are resolved against `module`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:
                if alias.name != "*":
                    yield node.lineno, f"{base}.{alias.name}"


def violations(module: str, source: str, *, is_package: bool = False) -> list[Violation]:
    found: list[Violation] = []
    seen: set[tuple[int, str]] = set()
    for line, name in imported_names(module, source, is_package=is_package):
        for rule in _broken_rules(module, name):
            if (line, rule) not in seen:  # `from a import b` is one import, however it is spelled
                seen.add((line, rule))
                found.append(Violation(module, line, name, rule))
    return sorted(found, key=lambda v: v.line)


def _broken_rules(module: str, name: str) -> Iterator[str]:
    if within(module, "core"):
        for adapter in ("bot", "channels", COMPOSITION_ROOT):
            if within(name, adapter):
                yield f"core must not import {adapter}/"
    is_adapter = within(module, "bot") or within(module, "channels")
    if is_adapter and module not in ENTRY_POINTS and within(name, COMPOSITION_ROOT):
        yield "adapters must not import the composition root"
    for sdk, allowed in SDK_ADAPTERS.items():
        if within(name, sdk) and not any(within(module, place) for place in allowed):
            yield f"{sdk} may be imported only in {', '.join(allowed) or '(no module yet)'}"


def application_modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package's __init__) for every application source file."""
    modules: dict[str, tuple[Path, bool]] = {}
    for top in APPLICATION:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            modules[".".join(parts)] = (path, is_package)
    return modules


def import_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def import_graph(modules: Mapping[str, tuple[Path, bool]]) -> dict[str, set[str]]:
    """Module -> the application modules it imports (any import, any depth)."""
    return {
        name: {
            imported
            for _, imported in imported_names(name, path.read_text(encoding="utf-8"), is_package=is_package)
            if imported in modules and imported != name
        }
        for name, (path, is_package) in modules.items()
    }


# --- the rules hold for the code ------------------------------------------------------------------------


def test_the_application_keeps_the_import_rules() -> None:
    modules = application_modules()
    # The scan sees the tree (a wrong root would pass vacuously).
    assert {"core.delivery", "bot.sender", "channels.email.sender", "cheshire.runtime"} <= modules.keys()
    broken = [
        str(v)
        for name, (path, is_package) in modules.items()
        for v in violations(name, path.read_text(encoding="utf-8"), is_package=is_package)
    ]
    assert broken == []


def test_no_import_cycles_among_the_application_modules() -> None:
    graph = import_graph(application_modules())
    assert "bot.notifier" in graph["bot.wiring"]  # the graph has edges (a broken parse would pass)
    assert import_cycles(graph) == []


def test_every_allowed_adapter_module_exists() -> None:
    # A renamed adapter must take its allow-list entry with it, or the rule silently allows nothing.
    modules = application_modules()
    stale = [
        place
        for allowed in SDK_ADAPTERS.values()
        for place in allowed
        if not any(within(name, place) for name in modules)
    ]
    assert stale == []
    assert modules.keys() >= ENTRY_POINTS


# --- the checker can fail --------------------------------------------------------------------------------


def test_core_importing_an_adapter_is_reported_wherever_the_import_is() -> None:
    source = """
from typing import TYPE_CHECKING

from core.types import Booking

if TYPE_CHECKING:
    from bot.views import CardData

def render() -> None:
    from channels.email import sender
    import cheshire.runtime
"""
    found = violations("core.notify.example", source)
    assert [(v.line, v.rule) for v in found] == [
        (7, "core must not import bot/"),
        (10, "core must not import channels/"),
        (11, "core must not import cheshire/"),
    ]


def test_an_sdk_outside_its_adapter_is_reported() -> None:
    source = "import anthropic\nfrom google.oauth2 import credentials\nfrom aiogram import Bot\nimport stripe"
    rules = [(v.line, v.imported) for v in violations("core.booking.example", source)]
    assert (1, "anthropic") in rules
    assert (2, "google.oauth2") in rules
    assert (3, "aiogram") in rules
    assert (4, "stripe") in rules
    # ... and allowed in its own adapter.
    assert violations("core.llm.anthropic_provider", "import anthropic\n") == []
    assert violations("bot.admin.cards", "from aiogram.types import Message\n") == []
    assert violations("channels.email.admin_mail", "import aiosmtplib\n") != []


def test_an_adapter_importing_the_composition_root_is_reported() -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cheshire.runtime import Runtime\n"
    assert [v.rule for v in violations("bot.setup", source)] == [
        "adapters must not import the composition root"
    ]
    assert [v.rule for v in violations("channels.web.views", "from cheshire import wiring\n")] == [
        "adapters must not import the composition root"
    ]
    assert violations("bot.__main__", "from cheshire.runtime import run\n") == []


def test_a_cycle_is_reported_even_through_type_checking_imports() -> None:
    modules = {
        "bot.setup": "if TYPE_CHECKING:\n    from bot.runtime import Runtime\n",
        "bot.runtime": "import bot.setup\n",
    }
    graph = {
        name: {imported for _, imported in imported_names(name, source) if imported in modules}
        for name, source in modules.items()
    }
    assert import_cycles(graph) == [["bot.runtime", "bot.setup"]]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_relative_imports_are_resolved() -> None:
    assert list(imported_names("core.notify.jobs", "from ..booking import api\n")) == [
        (1, "core.booking"),
        (1, "core.booking.api"),
    ]
    found = list(imported_names("bot", "from . import views\n", is_package=True))
    assert found == [(1, "bot"), (1, "bot.views")]
    assert violations("core.notify", "from .jobs import deliver\n", is_package=True) == []
