"""The floors pyproject.toml declares are the versions .ci/floors.txt pins, and CI tests those."""

import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (not pip's vendored copy: importing pip turns off setuptools' distutils shim)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
# The extras `pip install -e ".[dev]"` brings (dev pulls sweep). `browser` is opt-in (it needs a
# Chromium), so CI neither installs nor floors it.
CI_EXTRAS = ("dev", "sweep")


def declared() -> dict[str, Requirement]:
    """Every third-party requirement of the project and the extras CI installs, by name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in CI_EXTRAS:
        lines += project["optional-dependencies"][extra]
    reqs = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r for r in reqs if canonicalize_name(r.name) != "vae-latent"}


def pins(text: str) -> dict[str, str]:
    """`name==version` lines of a constraints file, by canonical name."""
    found = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            found[canonicalize_name(name)] = version
    return found


def floor(req: Requirement) -> str | None:
    """The version a `>=` specifier names, or None."""
    lows = [s.version for s in req.specifier if s.operator == ">="]
    return lows[0] if len(lows) == 1 else None


def mismatches(reqs: dict[str, Requirement], floors: dict[str, str]) -> list[str]:
    """What keeps `floors` from pinning exactly the floor each requirement declares."""
    problems = [f"{name}: pinned but not declared" for name in sorted(set(floors) - set(reqs))]
    for name, req in sorted(reqs.items()):
        low = floor(req)
        if low is None:
            problems.append(f"{name}: no single >= floor in pyproject.toml")
        elif name not in floors:
            problems.append(f"{name}: no pin in .ci/floors.txt")
        elif Version(floors[name]) != Version(low):  # 2.4 and 2.4.0 are one release
            problems.append(f"{name}: declares >={low}, CI pins {floors[name]}")
    return problems


FLOORS = pins((ROOT / ".ci" / "floors.txt").read_text())


def test_ci_pins_every_declared_floor_and_nothing_else() -> None:
    assert mismatches(declared(), FLOORS) == []


def test_a_floor_changed_in_one_place_is_caught() -> None:
    reqs = declared()
    raised = {**reqs, "torch": Requirement("torch>=2.5")}
    assert mismatches(raised, FLOORS) == ["torch: declares >=2.5, CI pins 2.4.1"]
    assert mismatches(reqs, {k: v for k, v in FLOORS.items() if k != "numpy"}) == [
        "numpy: no pin in .ci/floors.txt"
    ]
    assert mismatches(reqs, {**FLOORS, "scipy": "1.11"}) == ["scipy: pinned but not declared"]
