import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dogbreed.backends.base import read_endpoint_state
from dogbreed.backends.registry import rule_backend
from dogbreed.runtime import run_options
from dogbreed.runtime.rule_runner import run_rule
from dogbreed.serving import endpoint_registry, servable


def main(smk):
    backend = rule_backend(smk)
    remake = run_options.command("deploy --forcerun package_model")
    live = read_endpoint_state(smk.params.state_dir)
    if smk.params.backend == "local" and not (live and backend.healthy(live)):
        # nothing serves here to protect, and a server on this machine costs nothing: the check and the server
        # load the model side by side (seconds saved), and a model that does not load stops the server at once
        endpoint_registry.note_run(smk.params.state_dir, smk.params.results_dir, smk.params.backend)
        with ThreadPoolExecutor(1) as aside:
            checked = aside.submit(servable.check_servable, smk.input.model, remake)
            try:
                endpoint = backend.deploy(smk.input.model, smk.params.endpoint_name, smk.params.state_dir)
            except Exception:
                checked.result()  # the artifact's own one-line error, when that is why the server did not start
                raise
            try:
                checked.result()
            except BaseException:  # whatever stopped the check (a bad model, a full disk, a signal): no server left
                backend.teardown(smk.params.state_dir)
                raise
    else:
        # the new artifact loads, or the endpoint serving now is left as it is (deploy stops it first; a cloud
        # endpoint costs money from its first second)
        servable.check_servable(smk.input.model, remake)
        endpoint_registry.note_run(smk.params.state_dir, smk.params.results_dir, smk.params.backend)
        endpoint = backend.deploy(smk.input.model, smk.params.endpoint_name, smk.params.state_dir)
    # which training this endpoint serves, as MLflow knows it (None: trained with tracking off)
    endpoint["mlflow_run_id"] = (json.loads(Path(smk.input.model_json).read_text()).get("tracking") or {}).get("run_id")
    Path(smk.output[0]).write_text(json.dumps(endpoint, indent=2))
    return f"endpoint {endpoint['endpoint_name']} serving at {endpoint['url']}"


run_rule(main, snakemake)
