import json
from pathlib import Path

from dogbreed.backends.registry import rule_backend
from dogbreed.runtime import run_options
from dogbreed.runtime.rule_runner import run_rule
from dogbreed.serving import endpoint_registry, servable


def main(smk):
    # the new artifact loads, or the endpoint serving now is left as it is (deploy stops it first)
    servable.check_servable(smk.input.model, run_options.command("deploy --forcerun package_model"))
    backend = rule_backend(smk)
    endpoint_registry.note_run(smk.params.state_dir, smk.params.results_dir, smk.params.backend)
    endpoint = backend.deploy(smk.input.model, smk.params.endpoint_name, smk.params.state_dir)
    # which training this endpoint serves, as MLflow knows it (None: trained with tracking off)
    endpoint["mlflow_run_id"] = (json.loads(Path(smk.input.model_json).read_text()).get("tracking") or {}).get("run_id")
    Path(smk.output[0]).write_text(json.dumps(endpoint, indent=2))
    return f"endpoint {endpoint['endpoint_name']} serving at {endpoint['url']}"


run_rule(main, snakemake)
