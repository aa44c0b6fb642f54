"""The workflow as the Snakemake catalog checks it: `snakemake --lint` clean but for findings justified
where they are, snakefmt's format, and a conda environment per rule that agrees with requirements.txt
(conda channels cannot be reached here: the env files are checked, not built)."""

import re
import subprocess

import pytest
import yaml
from conftest import REPO, VENV_BIN

# The findings left, each justified in a comment beside it (the file and the words of that comment)
JUSTIFIED = {
    "Environment variable PYTHONPATH used but not asserted": ("Snakefile", "--lint asks for an envvars"),
    "Environment variable AWS_ENDPOINT_URL_S3": ("workflow/rules/common.smk", "--lint: set from the config"),
    "Mixed rules and functions in same snakefile": (
        "workflow/rules/common.smk",
        '--lint\'s "mixed rules and functions"',
    ),
}


def pins(lines) -> dict:
    found = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            found[name.strip().lower()] = version.strip()
    return found


def test_lint_finds_nothing_but_the_justified():
    result = subprocess.run(
        [str(VENV_BIN / "snakemake"), "--lint", "--configfile", "config/demo.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    findings = [line.strip()[2:] for line in (result.stdout + result.stderr).splitlines() if line.startswith("    * ")]
    unexplained = [f for f in findings if not any(f.startswith(known) for known in JUSTIFIED)]
    assert not unexplained, unexplained
    for file, words in JUSTIFIED.values():
        assert words in (REPO / file).read_text(), (file, words)


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["check", "format"])
def test_the_python_is_ruff_clean(command):
    result = subprocess.run([str(VENV_BIN / "ruff"), *command], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]


def test_the_rule_files_are_snakefmt_formatted():
    result = subprocess.run(
        [str(VENV_BIN / "snakefmt"), "--check", "Snakefile", "workflow/rules"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("env_file", sorted((REPO / "envs").glob("*.yaml")), ids=lambda p: p.stem)
def test_each_conda_env_parses_and_pins_what_requirements_pin(env_file):
    env = yaml.safe_load(env_file.read_text())
    assert env["name"] == f"dogbreed-{env_file.stem}" and "python=3.11" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    # the UIs' env against the UIs' requirements (make mlflow-ui), the rules' envs against the workflow's
    required = pins(
        (REPO / ("requirements-ui.txt" if env_file.stem == "ui" else "requirements.txt")).read_text().splitlines()
    )
    theirs = pins(pip)
    assert theirs and all(theirs[name] == required.get(name) for name in theirs), {
        n: (v, required.get(n)) for n, v in theirs.items()
    }
    assert [p for p in pip if "==" not in p] == []


def test_every_rule_names_an_env_that_exists():
    rules = "".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    blocks = re.split(r"^rule ", rules, flags=re.MULTILINE)[1:]
    for block in blocks:
        name = block.split(":")[0]
        used = re.findall(r'conda:\n\s+env\("(\w+)"\)', block)
        assert len(used) == 1 and (REPO / f"envs/{used[0]}.yaml").is_file(), name


def test_the_ui_opens_the_store_at_the_version_that_wrote_it():
    """The UI's full mlflow is the workflow's mlflow-skinny version (a newer UI would migrate the store's schema
    under the workflow's client), and its Optuna the tuner's (the study database's schema)."""
    workflow, ui = (
        pins((REPO / name).read_text().splitlines()) for name in ("requirements.txt", "requirements-ui.txt")
    )
    assert ui["mlflow"] == workflow["mlflow-skinny"] and ui["optuna"] == workflow["optuna"]
    assert all(ui[name] == workflow[name] for name in ("sqlalchemy", "alembic"))
