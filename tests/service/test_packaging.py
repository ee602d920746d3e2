"""The package builds quietly and carries its data (templates, static files, catalogues, the RADIUS
dictionary): the data folders are declared, so setuptools does not warn that it would ignore them."""
import subprocess
import sys
import zipfile

from tests.helpers import REPO


def test_the_wheel_builds_without_warnings_and_carries_its_data(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--disable-pip-version-check", "-v", "-w", str(tmp_path), str(REPO)],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-3000:]
    output = build.stdout + build.stderr
    assert "is absent from the `packages` configuration" not in output
    assert "Package would be ignored" not in output
    (wheel,) = tmp_path.glob("hotspotd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in ("portal_web/templates/splash.html", "portal_web/templates/admin/overview.html",
                 "portal_web/static/portal.js", "portal_web/translations/sw/LC_MESSAGES/messages.mo",
                 "radius/dictionary/dictionary", "portal_web/openapi.json"):
        assert data in names
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]
