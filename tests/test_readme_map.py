"""The README's map ("How it is built") against the tree, so that it cannot drift: every module
is named in the table, and every path, module and name the section gives exists."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "vae_latent"
TICKED = re.compile(r"`([^`]+)`")


def section() -> str:
    readme = (REPO / "README.md").read_text()
    return readme.split("## How it is built")[1].split("\n## ")[0]


def table_rows() -> list[tuple[str, str]]:
    """(first cell, second cell) of the module table."""
    rows = []
    for line in section().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 2:
            rows.append((cells[0], cells[1]))
    return rows


def named_modules(cell: str) -> list[str]:
    """The modules a first cell names; a bare ``name.py`` is in the folder named before it."""
    found, folder = [], ""
    for name in TICKED.findall(cell):
        if "/" in name:
            folder = name.rpartition("/")[0]
        elif folder:
            name = f"{folder}/{name}"
        found.append(name)
    return found


def modules() -> set[str]:
    skip = ("__init__.py", "__main__.py")
    return {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name not in skip}


def test_the_map_names_every_module_once_and_only_modules_that_exist():
    named = [m for cell, _ in table_rows() for m in named_modules(cell) if m != "benchmarks/"]
    assert sorted(set(named)) == sorted(named), "a module named twice"
    assert set(named) == modules()


def _source_path(path: str) -> bool:
    """A path into the package or the repository (not a run's folder such as ``.hydra/``)."""
    first = path.split("/")[0]
    return any((root / first).is_dir() for root in (PACKAGE, REPO))


def _exists(path: str) -> bool:
    return any((root / path).exists() for root in (PACKAGE, REPO))


def test_every_source_path_the_section_gives_exists():
    """Paths to code, configs and docs (``.py`` files and folders); a run's output files
    (``epochs/epoch_NNN.png``) are not paths in the tree."""
    text = section()
    paths = [t for t in TICKED.findall(text) if re.fullmatch(r"[\w./-]+", t) and "/" in t]
    paths = [p for p in paths if p.endswith((".py", "/")) and _source_path(p)]
    assert paths, "no path found: the section's format changed"
    assert [p for p in paths if not _exists(p)] == []
    for _, target in re.findall(r"\[([^]]+)\]\(([^)#]+)", text):
        assert (REPO / target).exists(), target


def test_every_name_the_section_gives_is_defined_in_the_package():
    """A code name in backticks (``choose_step``, ``ConvVAE.elbo``, ``tier()``) is defined
    somewhere in the package: a rename that the map misses fails here."""
    files = [*PACKAGE.rglob("*.py"), *(REPO / "benchmarks").rglob("*.py")]
    source = "\n".join(p.read_text() for p in files)
    defined = set(re.findall(r"^\s*(?:def|class)\s+(\w+)", source, re.M))
    defined |= set(re.findall(r"^\s*(\w+)\s*(?::[^=\n]+)?=", source, re.M))  # constants, attributes
    defined |= {p.stem for p in files}  # modules (benchmarks.report_scale)
    code = re.compile(r"(?:[A-Z]\w*\.)?[a-z_]\w*(?:\(\))?|[A-Z][A-Za-z0-9_]+")
    wanted = set()
    for token in TICKED.findall(section()):
        if code.fullmatch(token) and ("_" in token or token[0].isupper() or "." in token):
            wanted.add(token.removesuffix("()").rpartition(".")[2])
    assert wanted, "no name found: the section's format changed"
    assert sorted(wanted - defined) == []
