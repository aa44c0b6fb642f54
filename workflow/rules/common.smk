# Paths, names and helpers shared by the rules. (--lint's "mixed rules and functions" is about this file:
# it has functions only, and is where that lint says they belong.)
import os
from pathlib import Path

from dogbreed.data import download
from dogbreed.runtime import code_inputs, naming, run_plan
from dogbreed.training import jobspec

RESULTS = config["results_dir"]
if config["store"]["endpoint_url"]:
    # boto3 reads it in every process (rule scripts, training jobs): one setting for the whole run.
    # (--lint: set from the config, not asserted from the caller's environment, so envvars: does not fit.)
    os.environ["AWS_ENDPOINT_URL_S3"] = config["store"]["endpoint_url"]
BASE = Path(workflow.basedir)
SCRIPTS_DIR = BASE / "scripts"  # the SageMaker source_dir
ENVS = BASE / "envs"  # conda: one environment per concern (snakemake --sdm conda); the default is the venv


def env(name):
    return str(ENVS / f"{name}.yaml")


def source_dir(wildcards, input):
    """The folder of the job code among the rule's inputs: SageMaker's source_dir, shipped whole."""
    return str(next(Path(f).parent for f in input if Path(f).parent == SCRIPTS_DIR))


def results_dir(wildcards, input):
    """results_dir, as the folder of the rule's endpoint.json input (printed in the commands it shows)."""
    return str(Path(input.endpoint).parent)


SOURCE_ID = download.source_hash(config["data_source"])
RAW_DIR = f"data/raw/{SOURCE_ID}"
ENDPOINT_NAME = naming.endpoint_name(SOURCE_ID, RESULTS)
# What a live endpoint is (its process, container or SageMaker names): not a Snakemake output, since a
# server outlives a rerun, and not under results_dir, so that teardown finds every endpoint this
# checkout started even after results/ is deleted (docs/architecture.md §4).
ENDPOINTS_DIR = ".dogbreed/endpoints"
ENDPOINT_STATE = f"{ENDPOINTS_DIR}/{ENDPOINT_NAME}"


def R(path):
    """A path under results_dir."""
    return f"{RESULTS}/{path}"


def code(script):
    """The workflow modules a rule's script imports, transitively (code_inputs.py): inputs, so that editing one
    reruns the rule (and what depends on it). The rule script itself is Snakemake's own code trigger."""
    return code_inputs.rule_code(script, config["backend"])


# The jobs' code (what SageMaker gets as source_dir is the whole folder): an entry point and what it imports, and
# requirements.txt. An edit of inference.py redeploys without retuning or retraining (the endpoint gets
# SERVING_CODE), an edit of train.py retrains on cached features without extracting them again.
TRAINING_CODE = code_inputs.job_code("train.py")
FEATURE_CODE = code_inputs.job_code("feature_cache.py")
SERVING_CODE = code_inputs.job_code("inference.py", requirements=False)
# track_results' output (tracking.smk), named here because the gates, defined before it, wait for it: what made a
# gate fail is in the final training's MLflow run before the failure stops the run
FINAL_RUN_RECORD = R("tracking/final_run.json")


def backend_settings():
    """The backend's settings as rules that talk to it get them (jobspec.py says which shape a job)."""
    return jobspec.backend_settings(config)


def job_resources():
    """What a rule that runs training jobs asks of a cluster executor (config resources:; none matters locally)."""
    wanted = config["resources"]
    return {"mem_mb": wanted["mem_mb"], "runtime": wanted["runtime_minutes"], "gpu": wanted["gpus"]}


def reported_config():
    """The config the run report shows: less what is no input of any result (jobspec.result_config)."""
    return jobspec.result_config(config)


def job_backend_settings():
    """backend_settings() less what only the endpoint reads: what tuning and training jobs get."""
    return jobspec.job_backend_settings(config)


def job_config(kind):
    """What shapes a job of this kind (jobspec.py): its rule's param, so a change of it reruns the rule."""
    return jobspec.job_config(config, kind)


FEATURE_CACHE = jobspec.uses_feature_cache(config)
# what tune and train read their channels from: the images, or the frozen backbone's features of them
TRAINING_CHANNELS = R("features/channels.json") if FEATURE_CACHE else R("upload.json")
