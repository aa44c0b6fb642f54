"""The deploy target: every time it runs, it checks the recorded endpoint, and brings back one that
was stopped or died, from the same served artifact at the same address; the evaluation, of that same
artifact, stands, so nothing else reruns."""

import json
from pathlib import Path

from dogbreed.backends.base import read_endpoint_state
from dogbreed.backends.registry import rule_backend
from dogbreed.runtime import run_options
from dogbreed.runtime.rule_runner import run_rule
from dogbreed.serving import endpoint_registry


def main(smk):
    backend = rule_backend(smk)
    endpoint = json.loads(Path(smk.input.endpoint).read_text())
    name, stop_it = endpoint["endpoint_name"], run_options.command("teardown")
    state = read_endpoint_state(smk.params.state_dir)
    if state is not None and state.get("endpoint_name") == name and backend.healthy(endpoint):
        return f"endpoint {name} is serving at {endpoint['url']} (stop it: {stop_it})"
    why = "was torn down" if state is None else "does not answer"
    print(
        f"endpoint {name} at {endpoint['url']} {why}: bringing it back from {smk.input.model} "
        f"(its evaluation, {smk.input.evaluation}, is of this same artifact and stands)"
    )
    revived = endpoint_registry.bring_back(
        backend, endpoint, smk.input.model, smk.params.state_dir, smk.params.results_dir, smk.params.backend
    )
    return f"endpoint {name} brought back at {revived['url']} (stop it: {stop_it})"


run_rule(main, snakemake)
