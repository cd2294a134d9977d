"""What a ``pip install .`` (a wheel, not the editable checkout) carries.

An editable install reads every file of the checkout, so a runtime file left out of
``[tool.setuptools.package-data]`` only fails for users who install the wheel. These tests
check the declared patterns against the tree, without building anything.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# in the checkout for the README, not read at run time
NOT_SHIPPED = {"router/service/ui/screenshot-pool.png"}


def _shipped_data() -> set[str]:
    shipped = set()
    for package, patterns in PYPROJECT["tool"]["setuptools"]["package-data"].items():
        base = ROOT / package.replace(".", "/")
        for pattern in patterns:
            shipped |= {p.relative_to(ROOT).as_posix() for p in base.glob(pattern) if p.is_file()}
    return shipped


def _data_files() -> set[str]:
    files = set()
    for package in ("router", "profiles"):
        for path in (ROOT / package).rglob("*"):
            if path.is_file() and path.suffix not in {".py", ".pyc"} \
                    and "__pycache__" not in path.parts:
                files.add(path.relative_to(ROOT).as_posix())
    return files


def test_every_runtime_file_of_the_packages_is_package_data() -> None:
    missing = _data_files() - _shipped_data() - NOT_SHIPPED
    assert not missing, f"not in [tool.setuptools.package-data], so not in the wheel: {missing}"


def test_what_the_code_opens_is_shipped() -> None:
    from profiles.suite import SHIPPED_PACKAGE
    from router.pairing.vectors import VECTORS
    from router.profiling.sources import SHIPPED_PROFILES
    from router.service.ui.assets import STATIC

    shipped = _shipped_data()
    suites = SHIPPED_PACKAGE.replace(".", "/")
    for folder in (f"router/{SHIPPED_PROFILES}", f"router/{VECTORS}", f"router/{STATIC}",
                   f"{suites}/default", f"{suites}/smoke"):
        assert any(f.startswith(folder + "/") for f in shipped), folder
    assert {"router/py.typed", "profiles/py.typed",
            "router/service/ui/static/index.html"} <= shipped


def _floor(name: str) -> Version:
    for spec in PYPROJECT["project"]["dependencies"]:
        req = Requirement(spec)
        if req.name.lower() == name:
            floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
            assert floors, spec
            return floors[0]
    raise AssertionError(f"{name} is not a dependency")


def test_dependency_floors_are_versions_that_work() -> None:
    # pydantic 2.6 cannot build router.secrets.Secret's schema ("Unable to generate
    # pydantic-core schema for SecretRef"): every command fails at import
    assert _floor("pydantic") >= Version("2.7")
    # faiss-cpu 1.8.0 imports `packaging` without declaring it
    assert _floor("faiss-cpu") >= Version("1.8.0.post1")
