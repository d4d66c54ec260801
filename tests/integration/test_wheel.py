"""An installed wheel migrates: the Alembic scripts travel inside the package.

The wheel is built offline from a copy of the checkout, installed without dependencies into a
fresh virtualenv whose only view of the project venv is a ``.pth`` line to its site-packages
(so the dependencies resolve, but the editable ``worker`` does not: a ``.pth`` inside a path
entry is not processed), and its ``openrouter-watcher migrate`` runs from a directory outside
the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from worker.store.db import create_db_engine, current_revision
from worker.testing.env import clean_env

ROOT = Path(__file__).resolve().parents[2]
# What a build needs; everything else (.venv, .git, caches, build/) stays behind, so a stale
# build/ directory in the checkout cannot leak deleted modules into the wheel.
SOURCES = ("pyproject.toml", "README.md", "alembic.ini", "alembic", "worker")


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel built from a copy of the checkout, and what the build printed."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(path, src / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    dist = base / "dist"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--wheel-dir",
            str(dist),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = dist.glob("openrouter_watcher-*.whl")
    return built, result.stdout + result.stderr


@pytest.fixture(scope="module")
def wheel(build: tuple[Path, str]) -> Path:
    return build[0]


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel; returns its bin directory."""
    target = tmp_path_factory.mktemp("venv") / "venv"
    venv.create(target, with_pip=False)
    python = target / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The dependencies (SQLAlchemy, Alembic, …) from the project venv, after the venv's own.
    Path(purelib, "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return target / "bin"


def test_wheel_builds_without_warnings(build: tuple[Path, str]) -> None:
    # e.g. setuptools' deprecation of the `license = {text = …}` table
    assert "warning" not in build[1].lower(), build[1]


def test_wheel_ships_the_migration_scripts(wheel: Path) -> None:
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    scripts = {p.relative_to(ROOT / "alembic") for p in (ROOT / "alembic").rglob("*.py")}
    assert {f"worker/migrations/{p.as_posix()}" for p in scripts} <= names
    assert "worker/migrations/script.py.mako" in names
    assert not any(name.startswith("alembic/") for name in names)  # never the library's name


def test_wheel_ships_the_dashboards_script_and_stylesheet(wheel: Path) -> None:
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    static = "worker/daemon/http/static"
    assert {f"{static}/dashboard.js", f"{static}/dashboard.css"} <= names


def test_installed_wheel_migrates_a_fresh_database(installed: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"  # no alembic.ini, no checkout: only the package
    elsewhere.mkdir()
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    env = clean_env(OPENROUTER_WATCHER_CONFIG=os.devnull, OPENROUTER_WATCHER_DATABASE_URL=url)
    env.pop("PYTHONPATH", None)

    where = subprocess.run(
        [
            str(installed / "python"),
            "-c",
            "import worker, worker.store.db; print(worker.__file__); "
            "print(worker.store.db.migrations_dir())",
        ],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert where.returncode == 0, where.stderr
    # the wheel's copy, not the editable checkout
    assert all(line.startswith(str(installed.parent)) for line in where.stdout.splitlines())

    result = subprocess.run(
        [str(installed / "openrouter-watcher"), "migrate"],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is at the latest schema revision" in result.stdout

    engine = create_db_engine(url)
    try:
        assert current_revision(engine) == ScriptDirectory(str(ROOT / "alembic")).get_current_head()
    finally:
        engine.dispose()
