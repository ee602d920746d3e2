"""The house rules, checked on the source: which part may import which (STYLE.md 1, 12, 13).

* the core (``hotspotd/`` but :mod:`hotspotd.service`) imports no boundary and no web or RADIUS
  library: neither ``portal_web`` nor ``radius``, Flask, Werkzeug, waitress nor pyrad;
* only the composition root (:mod:`hotspotd.service`) imports ``portal_web`` and ``radius``;
* ``portal_web`` and ``radius`` never import each other;
* test equipment (``hotspotd.testing``, ``radius.testing``) is started by the composition root
  and the tests only: no product module imports it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOUNDARY_LIBRARIES = ("flask", "flask_babel", "flask_limiter", "flask_wtf", "werkzeug", "waitress", "pyrad")


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports (relative imports resolved against ``package``), at any depth
    of the file: a lazy import inside a function counts as much as one at the top."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _modules(top: str):
    for path in sorted((ROOT / top).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        package = ".".join(rel.parts[:-1]) if rel.name != "__init__" else ".".join(parts)
        yield ".".join(parts), path, package


def _under(module: str, roots) -> bool:
    return any(module == r or module.startswith(r + ".") for r in roots)


def breaches(top: str, forbidden, allowed_in=()) -> list[str]:
    """``module imports name`` for each module under ``top`` (but those under ``allowed_in``)
    that imports something under ``forbidden``."""
    out = []
    for module, path, package in _modules(top):
        if _under(module, allowed_in):
            continue
        out += [f"{module} imports {name}" for name in sorted(imported_modules(path, package))
                if _under(name, forbidden)]
    return out


def test_the_core_imports_no_boundary_and_no_web_or_radius_library():
    assert breaches("hotspotd", BOUNDARY_LIBRARIES + ("portal_web", "radius"), allowed_in=("hotspotd.service",)) == []


def test_portal_web_and_radius_do_not_import_each_other_nor_the_composition_root():
    assert breaches("portal_web", ("radius", "hotspotd.service")) == []
    assert breaches("radius", ("portal_web", "flask", "werkzeug", "waitress", "hotspotd.service")) == []


def test_no_product_module_imports_the_test_equipment():
    equipment = ("hotspotd.testing", "radius.testing")
    assert breaches("hotspotd", equipment, allowed_in=("hotspotd.service", "hotspotd.testing")) == []
    assert breaches("portal_web", equipment) == []
    assert breaches("radius", equipment, allowed_in=("radius.testing",)) == []


def test_the_composition_root_is_where_the_boundaries_are_wired():
    # the rules above would pass on a tree where nothing imports a boundary at all
    wired = set()
    for _, path, package in _modules("hotspotd/service"):
        wired |= imported_modules(path, package)
    assert {"portal_web", "radius.server", "waitress.server"} <= wired


@pytest.mark.parametrize("source, package, expected", [
    ("from flask import request\n", "hotspotd", "flask"),
    ("def f():\n    from portal_web import create_app\n", "hotspotd", "portal_web"),
    ("from ..testing import routeros\n", "hotspotd.storage", "hotspotd.testing"),
    ("import pyrad.packet\n", "hotspotd", "pyrad.packet"),
])
def test_the_check_sees_every_form_of_import(tmp_path, source, package, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert expected in imported_modules(path, package)


def test_every_folder_of_code_is_a_package():
    # a folder without __init__.py imports from a checkout (a namespace package) but is left out
    # of the wheel that scripts/install.sh installs (setup.cfg's find:)
    for top in ("hotspotd", "radius", "portal_web"):
        for folder in {p.parent for p in (ROOT / top).rglob("*.py")}:
            assert (folder / "__init__.py").exists(), folder.relative_to(ROOT)
