"""The package layout the README's Layout table describes: folders by purpose, imports running down.

Each package has a rank; a module may import its own package, and packages of lower rank, never a
higher one. The one exception is listed with its reason, so a new upward arrow fails here by name.
Nor may modules import each other in a loop, through any number of modules, function-level imports
included: a loop is named by its modules and the imports that close it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lowest first: the order of the README's Layout table.
RANKS = [
    ("moaa", "what everything shares"),
    ("moaa.config", "the run config"),
    ("moaa.prompts", "model-facing texts"),
    ("moaa.local", "the embedded model"),
    ("moaa.models", "the model seam"),
    ("moaa.sources", "prompt sources"),
    ("moaa.verify", "checking answers"),
    ("moaa.engine", "generation methods"),
    ("moaa.instructions", "instruction synthesis"),
    ("moaa.preference", "the DPO stage"),
    ("moaa.dataset", "data set versions"),
    ("moaa.work", "a run's work"),
    ("moaa.train", "TRL"),
    ("moaa.view", "the viewer and review gate"),
    ("flows", "Prefect"),
    ("moaa.api", "the Python API"),
    ("moaa.commands", "the CLI's sub-commands"),
    ("moaa.cli", "the CLI"),
    ("moaa.testing", "test servers"),
]
RANK = {name: i for i, (name, _) in enumerate(RANKS)}
ALLOWED_UPWARD = {
    # `import moaa` exposes the Python API's names (moaa.run, moaa.Version, ...), imported from
    # moaa.api on first use (a module __getattr__), so importing the package stays light.
    ("moaa", "moaa.api"),
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in RANK:
            return ".".join(parts[:i])
    raise AssertionError(f"{module}: in no layer of tests/test_layout.py; add its package to RANKS")


def modules() -> dict[str, Path]:
    found = {}
    for top in ("moaa", "flows"):
        for path in sorted((ROOT / top).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.split(".")[0] in ("moaa", "flows")}


def test_imports_run_down_the_layers():
    upward = []
    for module, path in modules().items():
        mine = RANK[layer_of(module)]
        for target in sorted(imports_of(path)):
            if RANK[layer_of(target)] > mine and (module, target) not in ALLOWED_UPWARD:
                upward.append(f"{module} imports {target}")
    assert upward == []


def test_no_two_modules_share_a_name():
    seen: dict[str, list[str]] = {}
    for module, path in modules().items():
        if path.name != "__init__.py":
            seen.setdefault(path.stem, []).append(module)
    assert {stem: mods for stem, mods in seen.items() if len(mods) > 1} == {}


def test_every_package_says_its_purpose_and_the_readme_lists_it():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("### Layout") :]
    for module, path in modules().items():
        if path.name == "__init__.py" and module.count(".") <= 1:
            assert ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))), f"{module}: no docstring"
            if module not in ("moaa", "flows"):
                assert f"`{module.replace('.', '/')}/`" in layout, f"{module}: not in the README's Layout table"


def module_imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules `module` imports anywhere in its file (function-level and TYPE_CHECKING imports
    included): `from moaa import errors` is moaa.errors, `from moaa.config import X` is the package
    moaa.config (its __init__), a relative import is resolved against the module's package."""

    def known_prefix(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(known_prefix(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            for alias in node.names:
                name = f"{base}.{alias.name}"
                found.add(name if name in known else known_prefix(base))
    return {m for m in found if m is not None and m != module}


def import_loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan's algorithm): each
    is a set of modules every one of which imports, at some remove, every other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    loops: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return loops


def test_no_module_imports_itself_through_others():
    """No import loop anywhere in moaa/ and flows/. `moaa` (the package) reaching moaa.api on first
    use is no loop while nothing below imports the package itself: `from moaa import errors` is
    moaa.errors, and the version every manifest records lives in moaa.version, not in moaa/__init__."""
    known = modules()
    graph = {module: module_imports(module, path, known) for module, path in known.items()}
    loops = [
        f"{len(loop)} modules: " + ", ".join(loop) + "; closed by: "
        + ", ".join(f"{a} -> {b}" for a in loop for b in sorted(graph[a] & set(loop)))
        for loop in import_loops(graph)
    ]  # fmt: skip
    assert loops == []
