"""Reruns that follow code: each rule's code inputs are what its script imports, derived (code_inputs.py), and the
rerun matrix (what an edit of each module reruns) is the one below. The rules' real inputs come from Snakemake
itself (`--filegraph` of the demo's DAG); the imports are found again here with the standard library's
modulefinder, independently of code_inputs.py."""

import modulefinder
import re
import subprocess

import pytest
from conftest import REPO, VENV_BIN
from dogbreed.runtime import code_inputs
from dogbreed.serving import packaging

# what an edit of each module reruns first, on the demo's DAG (local backend); what depends on those reruns after
# them (downstream, as for any changed input). serving/server.py, tuning/: the local backend imports them (its endpoint
# server, the project's tuner), so every rule that talks to the backend depends on them.
BACKEND_RULES = {"tune", "train", "upload", "start_endpoint", "evaluate", "deploy"}
# every rule of the demo's DAG: each script imports the package, and runtime/ (run_rule) at least
EVERY_RULE = {
    *BACKEND_RULES,
    "fetch",
    "sample_image",
    "prepare",
    "check_training",
    "profiler_report",
    "package_model",
    "report_figures",
    "report",
    "track_results",
}
RERUN_MATRIX = {
    "scripts/classifier.py": {"package_model", "train", "tune"},
    "scripts/feature_cache.py": {"train", "tune"},
    "scripts/image_folders.py": {"train", "tune"},
    "scripts/inference.py": {"package_model"},
    "scripts/instrumentation.py": {"train", "tune"},
    "scripts/job_contract.py": {*BACKEND_RULES, "check_training", "fetch", "package_model", "profiler_report"},
    "scripts/requirements.txt": {"train", "tune"},
    "scripts/train.py": {"train", "tune"},
    "workflow/dogbreed/__init__.py": EVERY_RULE,
    "workflow/dogbreed/backends/registry.py": BACKEND_RULES,
    "workflow/dogbreed/backends/__init__.py": BACKEND_RULES,
    "workflow/dogbreed/backends/errors.py": BACKEND_RULES,
    "workflow/dogbreed/checks/__init__.py": {"check_training", "profiler_report"},
    "workflow/dogbreed/data/__init__.py": {*BACKEND_RULES, "fetch", "prepare"},
    "workflow/dogbreed/reporting/__init__.py": {"profiler_report", "report", "report_figures"},
    "workflow/dogbreed/runtime/__init__.py": EVERY_RULE,
    "workflow/dogbreed/serving/__init__.py": {*BACKEND_RULES, "package_model", "report_figures", "report"},
    "workflow/dogbreed/training/__init__.py": BACKEND_RULES,
    "workflow/dogbreed/tuning/__init__.py": BACKEND_RULES,
    "workflow/dogbreed/backends/base.py": BACKEND_RULES,
    "workflow/dogbreed/backends/local.py": BACKEND_RULES,
    "workflow/dogbreed/backends/job_launcher.py": BACKEND_RULES,
    "workflow/dogbreed/runtime/code_inputs.py": {"package_model"},
    "workflow/dogbreed/checks/debugger_checks.py": {"check_training", "profiler_report"},
    "workflow/dogbreed/data/demo_data.py": {"fetch"},
    "workflow/dogbreed/serving/endpoint_registry.py": {"start_endpoint", "evaluate", "deploy"},
    "workflow/dogbreed/serving/evaluation.py": {"evaluate"},
    "workflow/dogbreed/data/download.py": {"fetch"},
    "workflow/dogbreed/checks/run_checks.py": {"check_training"},
    "workflow/dogbreed/training/jobspec.py": BACKEND_RULES,
    "workflow/dogbreed/training/metrics.py": BACKEND_RULES,
    "workflow/dogbreed/runtime/naming.py": {*BACKEND_RULES, "report", "track_results"},
    "workflow/dogbreed/serving/packaging.py": {"package_model"},
    "workflow/dogbreed/serving/model_archive.py": {*BACKEND_RULES, "package_model"},
    # report_figures reads the served model's preprocessing (servable.model_info) for the gallery's crops
    "workflow/dogbreed/serving/servable.py": {
        "package_model",
        "start_endpoint",
        "evaluate",
        "deploy",
        "report_figures",
        "report",
    },
    "workflow/dogbreed/data/verify_split.py": {"prepare"},
    "workflow/dogbreed/reporting/profiler_page.py": {"profiler_report"},
    "workflow/dogbreed/checks/profiler_checks.py": {"check_training"},
    "workflow/dogbreed/runtime/run_options.py": {"start_endpoint", "evaluate", "deploy", "package_model"},
    "workflow/dogbreed/reporting/run_page.py": {"report_figures", "report"},
    "workflow/dogbreed/reporting/html_kit.py": {"profiler_report", "report_figures", "report"},
    "workflow/dogbreed/serving/server.py": BACKEND_RULES,
    "workflow/dogbreed/data/store.py": {*BACKEND_RULES, "fetch"},
    "workflow/dogbreed/runtime/tracking.py": {"tune", "train", "track_results", "report"},
    "workflow/dogbreed/checks/artifacts.py": {"check_training", "profiler_report"},
    "workflow/dogbreed/tuning/optuna_study.py": BACKEND_RULES,
    "workflow/dogbreed/tuning/trial_jobs.py": BACKEND_RULES,
    "workflow/dogbreed/tuning/spec.py": BACKEND_RULES,
}


def filegraph(*args) -> tuple:
    """({rule: its input files}, [(rule, rule that consumes its output)]) of the DAG Snakemake builds."""
    out = subprocess.run(
        [str(VENV_BIN / "snakemake"), "deploy", "report", "--cores", "1", "--filegraph", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    nodes = {}
    for node in re.finditer(r"^(\d+) \[ shape=none.*?</table>>", out, re.MULTILINE | re.DOTALL):
        body = node.group(0)
        name = re.search(r'point-size="18">(\w+)</font>', body).group(1)
        inputs = body.split("&#8618; input")[1].split("output &rarr;")[0] if "&#8618; input" in body else ""
        nodes[node.group(1)] = (name, set(re.findall(r'monospace">([^<]+)</font>', inputs)))
    edges = [(nodes[a][0], nodes[b][0]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", out, re.MULTILINE)]
    return {name: files for name, files in nodes.values()}, edges


def rule_scripts() -> dict:
    """{rule: its script's name} from the rule files."""
    text = "".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    return dict(re.findall(r'^rule (\w+):.*?script:\n\s+"\.\./scripts/(\w+)\.py"', text, re.MULTILINE | re.DOTALL))


def imported_files(script, backend) -> set:
    """The project's files a script imports, found by modulefinder (other backends and the run's supervision aside)."""
    others = [
        m
        for name, m in code_inputs.BACKENDS.items()
        if name != backend and not (backend == "local_container" and name == "sagemaker")
    ]
    finder = modulefinder.ModuleFinder(
        path=[str(REPO / "workflow"), str(REPO / "scripts")], excludes=[*others, *code_inputs.SUPERVISION]
    )
    finder.run_script(str(script))
    return {
        module.__file__
        for module in finder.modules.values()
        if module.__file__ and module.__file__.startswith(str(REPO)) and module.__file__ != str(script)
    }


@pytest.fixture(scope="module")
def demo_graph():
    return filegraph("--configfile", "config/demo.yaml")


@pytest.mark.parametrize("backend", ["local", "sagemaker"])
def test_every_rule_scripts_imports_are_among_its_inputs(backend, demo_graph):
    inputs, _ = (
        demo_graph
        if backend == "local"
        else filegraph(
            "--configfile", "config/demo.yaml", "--config", "backend=sagemaker", "store={uri: 's3://bucket/x'}"
        )
    )
    scripts = rule_scripts()
    assert {rule for rule in inputs if rule in scripts} == set(inputs) - {"all"}  # every rule of the DAG has a script
    for rule in inputs.keys() & scripts.keys():
        script = REPO / "workflow/scripts" / f"{scripts[rule]}.py"
        missing = imported_files(script, backend) - inputs[rule]
        assert not missing, (rule, missing)
        # what may be left out (the run's supervision) every rule script imports, through run_rule
        assert "from dogbreed.runtime.rule_runner import run_rule" in script.read_text(), rule


def test_the_rerun_matrix(demo_graph):
    inputs, edges = demo_graph
    found = {}
    for rule, files in inputs.items():
        for file in files:
            if file.startswith(str(REPO)):
                found.setdefault(file.removeprefix(f"{REPO}/"), set()).add(rule)
    assert found == RERUN_MATRIX
    # and after them, what depends on their outputs: evaluate.py reruns the evaluation and the reports
    after, todo = set(), ["evaluate"]
    while todo:
        rule = todo.pop()
        for upstream, downstream in edges:
            if upstream == rule and downstream not in after:
                after.add(downstream)
                todo.append(downstream)
    assert after == {"track_results", "report_figures", "report", "deploy"}


def test_the_gates_wait_for_the_tracking():
    """What makes a gate fail (the rule verdicts, the evaluation) is in the final training's MLflow run before the
    failure stops the run (track_results, which logs them, comes first)."""
    _, edges = filegraph(
        "--configfile", "config/demo.yaml", "--config", "min_accuracy=0.5", "profiling={stop_on: [Overfit]}"
    )
    assert {("track_results", "training_gate"), ("track_results", "accuracy_gate")} <= set(edges)


def test_the_job_code_sets_are_the_entry_points_imports():
    for entry, requirements in (("train.py", True), ("feature_cache.py", True), ("inference.py", False)):
        finder = modulefinder.ModuleFinder(path=[str(REPO / "scripts")])
        finder.run_script(str(REPO / "scripts" / entry))
        found = {
            m.__file__ for m in finder.modules.values() if m.__file__ and m.__file__.startswith(str(REPO / "scripts"))
        }
        expected = found | ({str(REPO / "scripts/requirements.txt")} if requirements else set())
        assert set(code_inputs.job_code(entry, requirements)) == expected, entry
    # what the endpoint gets beside the model
    assert packaging.SERVING_CODE == ("classifier.py", "inference.py", "job_contract.py")
