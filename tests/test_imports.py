"""The package's shape: which subpackage may import which, no import cycles, the README's map."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "vae_latent"
# What each part may import, lower layers first: the ML (data, model, latent, callbacks) never
# imports the tool (run) or the study, and nothing but the entry points imports the apps.
ALLOWED = {
    "errors": {"files"},
    "files": set(),
    "text": {"files"},
    "data": {"errors", "files", "text"},
    "model": {"errors", "files", "text"},
    "latent": {"model", "data", "errors", "files", "text"},
    "callbacks": {"latent", "model", "data", "errors", "files", "text"},
    "run": {"callbacks", "latent", "model", "data", "errors", "files", "text"},
    "study": {"run", "latent", "data", "errors", "files", "text"},
    "__init__": {"run", "model"},
    "__main__": {"cli"},
    "cli": {"run", "study", "errors", "files", "text"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the vae_latent modules it imports (at top level or inside functions)."""
    modules = {module_name(p): p for p in root.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def part(module: str) -> str:
    """'vae_latent.run.train' -> 'run'; 'vae_latent' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_each_subpackage_imports_only_what_its_layer_may():
    offenders = {}
    for module, deps in imports().items():
        mine = part(module)
        bad = {d for d in deps if part(d) != mine and part(d) not in ALLOWED[mine]}
        if bad:
            offenders[module] = sorted(bad)
    assert offenders == {}


def test_every_part_of_the_package_has_a_rule():
    parts = {part(m) for m in imports()}
    assert parts <= set(ALLOWED), parts - set(ALLOWED)


def test_the_benchmarks_use_the_library_and_never_the_apps():
    graph = imports(REPO / "benchmarks")
    assert not [m for deps in graph.values() for m in deps if m.startswith("vae_latent.cli")]


def test_the_imports_have_no_cycles():
    graph = imports()
    done, path = set(), []

    def visit(module):
        if module in path:
            raise AssertionError(
                "import cycle: " + " -> ".join([*path[path.index(module) :], module])
            )
        if module in done or module not in graph:
            return
        path.append(module)
        for dep in sorted(graph[module]):
            if not module.startswith(dep + "."):  # a package's __init__ runs before its modules
                visit(dep)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_the_readme_map_names_every_module():
    readme = (REPO / "README.md").read_text()
    table = readme.split("## How it is built")[1].split("\n## ")[0]
    modules = {
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    missing = {m for m in modules if f"`{m}`" not in table and f"`{Path(m).name}`" not in table}
    assert missing == set()
