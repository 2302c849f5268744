"""The package's shape: the library never imports the apps, and no module imports itself back."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vae_latent"
APPS = {"cli", "__main__"}  # the console entry points; nothing in the library may import them


def imports() -> dict[str, set[str]]:
    """module -> the vae_latent modules it imports (at top level or inside functions)."""
    graph = {}
    for path in PACKAGE.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "vae_latent":
                    found |= {a.name for a in node.names}
                elif node.module.startswith("vae_latent."):
                    found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found |= {
                    a.name.split(".")[1] for a in node.names if a.name.startswith("vae_latent.")
                }
        graph[path.stem] = found - {path.stem}
    return graph


def test_the_library_never_imports_the_apps():
    offenders = {m: deps & APPS for m, deps in imports().items() if m not in APPS and deps & APPS}
    assert offenders == {}


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
            visit(dep)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_every_module_stays_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 300} == {}


def test_the_readme_structure_table_names_every_module():
    readme = (PACKAGE.parent / "README.md").read_text()
    table = readme.split("## How it is built")[1].split("\n## ")[0]
    modules = {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py", "__main__.py"}
    missing = {m for m in modules if f"`{m}`" not in table and f"`vae_latent/{m}`" not in table}
    assert missing == set()
