"""The lock files agree with what they lock: requirements.lock with requirements.txt (and with this environment,
which `make` installs from it), each image layer's lock with its requirements and the project's pins. After a
change to a requirements file, `make lock` writes them again."""

import importlib.metadata
import re
import sysconfig

import pytest
from conftest import REPO

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)", re.MULTILINE)
LAYERS = ("base", "training", "inference")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path) -> dict:
    """{name: version} of every `name==version` line (extras dropped)."""
    return {canonical(name): version for name, _extras, version in PIN.findall((REPO / path).read_text())}


def locked(path) -> dict:
    """{name: (version, hashes, what asked for it)} of a lock written by `uv pip compile --generate-hashes`."""
    entries = {}
    for block in re.split(r"\n(?=\S)", (REPO / path).read_text().strip()):
        match = PIN.match(block)
        assert match, f"{path}: not a pinned entry: {block[:80]!r}"
        via = re.findall(r"#\s+(?:via\s+)?(-[rc] \S+|\S+)\s*$", block, re.MULTILINE)
        entries[canonical(match.group(1))] = (match.group(3), re.findall(r"--hash=sha256:[0-9a-f]{64}", block), via)
    return entries


def fix() -> str:
    return "requirements changed without the lock: run `make lock` and commit the lock files"


def test_the_lock_pins_requirements_txt_exactly_and_hashes_every_package():
    wanted, lock = pins("requirements.txt"), locked("requirements.lock")
    assert {name: lock[name][0] for name in wanted if name in lock} == wanted, fix()
    top_level = {name for name, (_, _, via) in lock.items() if "-r requirements.txt" in via}
    assert top_level == set(wanted), fix()  # nothing dropped from requirements.txt lingers
    assert [name for name, (_, hashes, _) in lock.items() if not hashes] == []


def test_this_environment_is_the_lock():
    """make installs the venv from the lock: every locked version is the one installed (a venv from anything
    else, or a lock written after the install, fails here)."""
    lock = locked("requirements.lock")
    # what the environment's site-packages hold (on sys.path, a package's vendored copies may show too)
    site_packages = sysconfig.get_paths()["purelib"]
    installed = {
        canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions(path=[site_packages])
    }
    assert {name: installed.get(name) for name in lock} == {name: version for name, (version, _, _) in lock.items()}


def test_uv_is_installed_from_its_own_hashed_lock():
    version = re.search(r"^UV_VERSION := (\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE).group(1)
    ((name, (pinned, hashes, _)),) = locked("requirements-uv.lock").items()
    assert (name, pinned) == ("uv", version) and hashes


@pytest.mark.parametrize("layer", LAYERS)
def test_each_image_layer_is_locked_under_the_project_pins(layer):
    """containers/constraints.txt: requirements.txt's pins less extras (build.sh says why); each layer's lock keeps
    them and its own requirements' pins, and hashes every file its wheelhouse fetches."""
    project = pins("requirements.txt")
    constraints = pins("containers/constraints.txt")
    assert constraints == project, fix()
    lock = locked(f"containers/requirements-{layer}.lock")
    own = pins(f"containers/requirements-{layer}.txt")
    asked = {canonical(line.split("==")[0].split("[")[0].strip()) for line in _requirement_lines(layer)}
    assert asked <= set(lock), fix()
    assert {name: lock[name][0] for name in own} == own, fix()
    assert {name: lock[name][0] for name in constraints if name in lock} == {
        name: v for name, v in constraints.items() if name in lock
    }, fix()
    assert [name for name, (_, hashes, _) in lock.items() if not hashes] == []


def _requirement_lines(layer) -> list:
    text = (REPO / f"containers/requirements-{layer}.txt").read_text()
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
