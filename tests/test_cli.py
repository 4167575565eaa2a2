"""The `diffnb` console script."""
import subprocess
import sys

import diffnb


def run(*args):
    return subprocess.run([sys.executable, "-c", "import sys; from diffnb.cli import main; sys.exit(main())", *args],
                          capture_output=True, text=True, timeout=120)


def test_help_and_version():
    r = run("--help")
    assert r.returncode == 0 and "--version" in r.stdout and "generate" in r.stdout
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"diffnb {diffnb.__version__}"


def test_unknown_command():
    r = run("frobnicate")
    assert r.returncode == 2 and "unknown command" in r.stderr


def test_console_script_registered():
    from importlib.metadata import entry_points
    eps = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert eps.get("diffnb") == "diffnb.cli:main"
