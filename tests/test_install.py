"""
``twistd xapi`` works after ``pip install -e .`` as after ``pip install .``:
each into a fresh virtual environment, from a copy of the checkout, then
the plugin is looked for by twistd itself.  pip builds with the build
requirements pyproject.toml names, installed once for both (build
isolation would fetch and install them again for each).

The environment borrows Twisted and the other dependencies from the
interpreter running the tests (a .pth line), except Twisted's plugin
directory, rebuilt without the xapi plugin that interpreter's own install
of the project put there: only the install under test can supply it.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib

import pytest
import twisted

from tests.support.servers import REPO

SKIP_COPYING = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.pyc", "*.so", "build", "dist",
    "*.egg-info", "node_modules", ".hypothesis", ".pytest_cache",
    "_trial_temp*", "results")

TWISTD = ("import sys; sys.argv[0] = 'twistd'; "
          "from twisted.scripts.twistd import run; run()")
WHERE = "import twisted.plugins.xapi as p; print(p.__file__)"


def run(*argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=300,
                          **kw)


def fresh_venv(path):
    """A virtual environment with nothing of the project in it."""
    assert run(sys.executable, "-m", "venv", "--without-pip",
               str(path)).returncode == 0
    python = str(path / "bin" / "python")
    site = run(python, "-c", "import sysconfig; "
               "print(sysconfig.get_paths()['purelib'])").stdout.strip()
    return python, site


def borrow_dependencies(site):
    """Twisted without any xapi plugin but the one installed here (a
    regular install put twisted/plugins/xapi.py in ``site``), the rest of
    the dependencies as they are in the interpreter running the tests."""
    source = os.path.dirname(twisted.__file__)
    target = os.path.join(site, "twisted")
    for sub in ("", "plugins"):
        os.makedirs(os.path.join(target, sub), exist_ok=True)
        for name in os.listdir(os.path.join(source, sub)):
            there = os.path.join(target, sub, name)
            if name in ("plugins", "__pycache__", "dropin.cache", "xapi.py") \
                    or os.path.exists(there):
                continue
            os.symlink(os.path.join(source, sub, name), there)
    here = {sysconfig.get_paths()["purelib"],
            sysconfig.get_paths()["platlib"]}
    # Processed after the install's own .pth lines (names sort), so the
    # project under test comes before any copy of it found here.
    with open(os.path.join(site, "zz-borrowed.pth"), "w") as f:
        f.write("".join(p + "\n" for p in sorted(here)))


@pytest.fixture(scope="module")
def build_tools(tmp_path_factory):
    """A directory with pyproject.toml's build requirements."""
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        requires = tomllib.load(f)["build-system"]["requires"]
    target = str(tmp_path_factory.mktemp("build-tools"))
    done = run(sys.executable, "-m", "pip", "install", "--quiet",
               "--disable-pip-version-check", "--target", target, *requires)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return target


@pytest.mark.parametrize("editable", [True, False],
                         ids=["pip install -e", "pip install"])
def test_twistd_finds_the_plugin(tmp_path, editable, build_tools):
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO, checkout, ignore=SKIP_COPYING, symlinks=True)
    python, site = fresh_venv(tmp_path / "venv")
    install = [sys.executable, "-m", "pip", "--python", python, "install",
               "--quiet", "--no-deps", "--disable-pip-version-check",
               "--no-build-isolation"]
    if editable:
        install.append("-e")
    done = run(*install, str(checkout),
               env=dict(os.environ, PYTHONPATH=build_tools))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    borrow_dependencies(site)

    elsewhere = str(tmp_path)   # not the checkout: nothing from the cwd
    where = run(python, "-c", WHERE, cwd=elsewhere)
    assert where.returncode == 0, where.stderr[-3000:]
    expected = checkout if editable else site
    assert where.stdout.strip().startswith(str(expected)), where.stdout
    helped = run(python, "-c", TWISTD, "xapi", "--help", cwd=elsewhere)
    assert helped.returncode == 0, helped.stdout[-2000:] + helped.stderr
    assert "Usage: twistd [options] xapi [options]" in helped.stdout
    assert "--data-dir" in helped.stdout
