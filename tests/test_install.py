"""The project installs: a wheel builds, installs, and its ``tagstream`` command runs elsewhere.

The wheel is built from a copy of the packages ``pyproject.toml`` names (so the
build leaves nothing in the checkout) with the test interpreter's setuptools
(``--no-build-isolation``: no download), then installed with ``--no-deps`` into
a ``--target`` folder: its dependencies are the test environment's, its code
only the wheel's.  Every command runs from a folder outside the checkout with
``PYTHONPATH`` set to that target alone, and ``tagstream --version`` proves
which copy answered.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tagstream.__main__ import COMMANDS
from tagstream.__main__ import main as tagstream_main

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
#: The top-level packages pyproject.toml lists (``include`` without the ``.*`` patterns).
_FIND = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
PACKAGES = [name for name in _FIND["include"] if "*" not in name]
#: Bound on each command: only turns a hang into a failure.
TIMEOUT_S = 300


def _pip(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, f"pip {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of what pyproject.toml ships."""
    work = tmp_path_factory.mktemp("build")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", PYPROJECT["project"]["readme"]):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        if (ROOT / package).is_dir():
            shutil.copytree(ROOT / package, source / package, ignore=ignore)
    dist = work / "dist"
    _pip(
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        f"--wheel-dir={dist}",
        ".",
        cwd=source,
    )
    (built,) = dist.glob("tagstream-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed with ``--no-deps`` into a target folder; returns the folder."""
    target = tmp_path_factory.mktemp("target")
    _pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel), cwd=target)
    return target


@pytest.fixture
def elsewhere(tmp_path: Path, installed: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A folder outside the checkout and an environment that sees only the installed copy.

    ``HOME`` and ``XDG_CONFIG_HOME`` point into the folder so the user's own
    settings file cannot leak in; ``TAGSTREAM_CONFIG`` is unset.
    """
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TAGSTREAM_CONFIG")}
    env.update(
        PYTHONPATH=str(installed),
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    yield cwd, env


def _tagstream(
    installed: Path, *args: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(installed / "bin" / "tagstream"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def test_every_subcommand_names_a_module_with_main() -> None:
    for name, command in COMMANDS.items():
        assert callable(importlib.import_module(command.module).main), name


def test_the_dispatcher_hands_the_rest_of_the_line_and_the_streams_on(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    argv = ["keys", "generate", "--out", str(tmp_path), "--name", "w"]
    assert tagstream_main(argv, stdout=out, stderr=err) == 0
    assert out.getvalue().startswith(f"public key: {tmp_path / 'w.key'}")
    assert tagstream_main(argv, stdout=out, stderr=err) == 2  # the command's own usage error
    assert err.getvalue().strip().endswith("exists already; pick another --name or pass --force")
    helped = io.StringIO()
    assert tagstream_main(["help", "keys"], stdout=helped) == 0
    assert helped.getvalue().startswith("usage: ")
    assert tagstream_main([], stderr=io.StringIO()) == 2


def test_a_folder_hiding_a_package_is_named_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``tools`` folder without ``__init__.py`` taken for tagstream's ``tools``."""
    stray = tmp_path / "site-packages" / "tools"
    stray.mkdir(parents=True)
    (stray / "dump-onnx.py").write_text("", encoding="utf-8")
    hidden = importlib.util.module_from_spec(
        importlib.machinery.ModuleSpec("tools", None, is_package=True)
    )
    hidden.__path__ = [str(stray)]
    for name in [n for n in sys.modules if n == "tools" or n.startswith("tools.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tools", hidden)
    err = io.StringIO()
    assert tagstream_main(["subscribe", "--help"], stdout=io.StringIO(), stderr=err) == 3
    line = err.getvalue()
    assert line.count("\n") == 1 and line.startswith(f"error: Python took the folder {stray} ")
    assert "run scripts/install.sh again" in line


@pytest.mark.skipif(
    not (Path(sys.executable).parent / "tagstream").is_file(),
    reason="tagstream is not installed beside this interpreter (scripts/install.sh does)",
)
def test_the_installed_command_imports_its_tools_outside_the_checkout(tmp_path: Path) -> None:
    """``.venv/bin/tagstream live`` as the README runs it: the dashboards import.

    tf2onnx's wheel installs a ``tools`` folder of scripts into site-packages, which
    hid the editable install's ``tools`` until ``scripts/install.sh`` removed it.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
        assert done.returncode == 0, done.stderr
        return done

    for command in ("live", "subscribe", "web"):
        done = run(str(Path(sys.executable).parent / "tagstream"), command, "--help")
        assert done.stdout.startswith(f"usage: tagstream {command}")
    # No other top-level package of the project is hidden either.
    script = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    print(name, importlib.import_module(name).__file__)"
    )
    done = run(sys.executable, "-c", script, *PACKAGES)
    assert "None" not in done.stdout.split(), done.stdout


def test_wheel_holds_every_package_and_its_data_files_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names if not name.startswith("tagstream-")}
    shipped = {p for p in PACKAGES if (ROOT / p / "__init__.py").is_file()}
    assert tops == shipped
    for data in [*ROOT.glob("tools/*/index.html"), *ROOT.glob("training/configs/*.toml")]:
        assert data.relative_to(ROOT).as_posix() in names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    )
    assert b"tagstream = tagstream.__main__:console" in entry_points


def test_console_script_runs_the_installed_copy_outside_the_checkout(
    installed: Path, elsewhere: tuple[Path, dict[str, str]]
) -> None:
    cwd, env = elsewhere
    version = _tagstream(installed, "--version", cwd=cwd, env=env)
    assert version.returncode == 0, version.stderr
    assert f"({installed / 'tagstream'})" in version.stdout
    assert str(ROOT) not in version.stdout

    helped = _tagstream(installed, "--help", cwd=cwd, env=env)
    assert helped.returncode == 0, helped.stderr
    for command in ("tag", "worker", "stream", "subscribe", "live", "web", "keys", "training"):
        assert f"\n  {command} " in helped.stdout

    unknown = _tagstream(installed, "wroker", cwd=cwd, env=env)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == (
        "error: unknown command 'wroker'; did you mean 'worker'? run tagstream --help for the list"
    )


def test_keys_writes_into_the_current_folder(
    installed: Path, elsewhere: tuple[Path, dict[str, str]]
) -> None:
    cwd, env = elsewhere
    done = _tagstream(installed, "keys", "generate", "--out", "keys", cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    assert (cwd / "keys" / "tagstream.key").is_file()
    assert (cwd / "keys" / "tagstream.key_secret").is_file()


def test_settings_are_found_in_the_documented_order(
    installed: Path, elsewhere: tuple[Path, dict[str, str]]
) -> None:
    """--config, then $TAGSTREAM_CONFIG, then ./config.toml, then the user's file.

    Each place holds a different bad value, so the error line names the file the
    worker read; a bad setting is a usage error (2) before any model loads.
    """
    cwd, env = elsewhere
    user = Path(env["XDG_CONFIG_HOME"]) / "tagstream" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text("[inference]\nmax_batch = 0\n", encoding="utf-8")
    (cwd / "config.toml").write_text("[inference]\nhop_seconds = -1.0\n", encoding="utf-8")
    (cwd / "env.toml").write_text("[metrics]\nworker_port = 70000\n", encoding="utf-8")
    (cwd / "flag.toml").write_text('[inference]\nmode = "fast"\n', encoding="utf-8")
    with_env = {**env, "TAGSTREAM_CONFIG": str(cwd / "env.toml")}

    def worker_error(*args: str, env: dict[str, str]) -> str:
        done = _tagstream(installed, "worker", *args, cwd=cwd, env=env)
        assert done.returncode == 2, done.stderr
        return done.stderr.strip().splitlines()[-1]

    assert worker_error("--config", "flag.toml", env=with_env).startswith("error: inference.mode")
    assert worker_error(env=with_env).startswith("error: metrics.worker_port")
    assert worker_error(env=env).startswith("error: inference.hop_seconds")
    (cwd / "config.toml").unlink()
    assert worker_error(env=env).startswith("error: inference.max_batch")


def test_python_m_runs_the_installed_copy_too(
    installed: Path, elsewhere: tuple[Path, dict[str, str]]
) -> None:
    cwd, env = elsewhere

    def python_m(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )

    version = python_m("tagstream", "--version")
    assert version.returncode == 0 and f"({installed / 'tagstream'})" in version.stdout
    (cwd / "config.toml").write_text("[inference]\nmax_batch = 100000\n", encoding="utf-8")
    done = python_m("inference")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: inference.max_batch")
