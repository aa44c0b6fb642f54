"""The documentation: the site builds with `mkdocs build --strict` (every page in the nav, every link and anchor
resolves), the Configuration page names every key of the config schema, the README stays a landing page, and
no page keeps a dated measurement (those live in BENCHMARKS.md, each with its machine and date)."""

import os
import re
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
CONFIGURATION = REPO / "docs" / "configuration.md"
PAGES = sorted((REPO / "docs").glob("*.md"))


def test_the_site_builds_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's notice about MkDocs 2, not a warning of ours
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").exists()
    # BENCHMARKS.md (outside docs/) is included whole in the Benchmarks page
    first_heading = re.search(r"^## (.+)$", (REPO / "BENCHMARKS.md").read_text(), re.MULTILINE).group(1)
    assert first_heading.split("`")[0] in (tmp_path / "site" / "benchmarks" / "index.html").read_text()


def schema_keys(node: dict, defs: dict, path=(), seen_refs=None) -> list:
    """Every key of the schema as a dotted path, nested objects included; a map of named entries (the tuning
    parameters) as `<name>`; a $ref's keys under the first key that uses it (the others name only themselves:
    `tuning.trial_hyperparameters` takes the keys of `hyperparameters`)."""
    seen_refs = set() if seen_refs is None else seen_refs
    if "$ref" in node:
        ref = node["$ref"]
        if ref in seen_refs:
            return []
        seen_refs.add(ref)
        node = {**defs[ref.rsplit("/", 1)[1]], **node}
    keys = []
    for name, child in (node.get("properties") or {}).items():
        keys.append(".".join((*path, name)))
        keys += schema_keys(child, defs, (*path, name), seen_refs)
    entries = node.get("additionalProperties")
    if isinstance(entries, dict) and entries.get("properties"):
        keys += schema_keys(entries, defs, (*path, "<name>"), seen_refs)
    return keys


def test_the_configuration_page_names_every_key_of_the_schema():
    schema = yaml.safe_load(SCHEMA.read_text())
    keys = schema_keys(schema, schema.get("$defs", {}))
    assert "data.extraction.max_ratio" in keys and "tuning.parameters.<name>.scaling" in keys  # the walk goes deep
    page = CONFIGURATION.read_text()
    missing = [key for key in keys if f"`{key}`" not in page]
    assert not missing, f"docs/configuration.md does not document: {', '.join(missing)}"


def test_the_readme_is_a_landing_page_whose_links_resolve():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) < 150
    first_screen = "\n".join(readme.splitlines()[:30])
    for step in ("make demo", "results-demo/report.html", "/invocations"):  # the demo, its report, a prediction
        assert step in first_screen, step
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme):
        if not re.match(r"[a-z]+://", target):
            assert (REPO / target).exists(), f"README.md links to {target}, which does not exist"


@pytest.mark.parametrize("path", [REPO / "README.md", REPO / "config" / "README.md", *PAGES], ids=lambda p: p.name)
def test_no_dated_measurements_outside_benchmarks(path):
    """A figure in the docs links to its BENCHMARKS.md section; the date and the machine stay there."""
    diary = re.compile(r"\b20\d\d-\d\d-\d\d\b|\bVMs?\b|\bearlier machine\b|\bthis one\b.*\b\d+(\.\d+)? s\b")
    found = [f"{path.name}:{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), 1)]
    assert [line for line in found if diary.search(line)] == []


def test_the_workflow_catalog_files():
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    assert set(catalog["usage"]) >= {"mandatory-flags", "software-stack-deployment", "report"}
    config_readme = (REPO / "config" / "README.md").read_text()
    overlays = [f"config/{p.name}" for p in sorted((REPO / "config").glob("*.yaml"))]
    assert [name for name in ["config.yaml", *overlays] if f"`{name}`" not in config_readme] == []
