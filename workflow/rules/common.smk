# Paths, names and helpers shared by the rules. (--lint's "mixed rules and functions" is about this file:
# it has functions only, and is where that lint says they belong.)
import os
from pathlib import Path

from dogbreed import fetch as fetch_module
from dogbreed import naming, packaging, store

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


SOURCE_ID = fetch_module.source_hash(config["data_source"])
RAW_DIR = f"data/raw/{SOURCE_ID}"
# data + results folder: a rehearsal and its cloud run, or two runs on one dataset, never share an endpoint
ENDPOINT_NAME = f"dogbreed-{SOURCE_ID[:8]}-{naming.stable_hash(str(Path(RESULTS).resolve()), 6)}"
# What a live endpoint is (its process, container or SageMaker names): not a Snakemake output, since a
# server outlives a rerun, and not under results_dir, so that teardown finds every endpoint this
# checkout started even after results/ is deleted (docs/architecture.md §4).
ENDPOINTS_DIR = ".dogbreed/endpoints"
ENDPOINT_STATE = f"{ENDPOINTS_DIR}/{ENDPOINT_NAME}"


def R(path):
    """A path under results_dir."""
    return f"{RESULTS}/{path}"


# what every rule script that talks to the backend imports (local_container builds on sagemaker.py)
BACKEND_OWN_MODULES = {
    "local": ["backends/local"],
    "local_container": ["backends/sagemaker", "backends/local_container", "containers"],
    "sagemaker": ["backends/sagemaker"],
}[config["backend"]]
BACKEND_MODULES = ["backends/__init__", "backends/base", *BACKEND_OWN_MODULES, "store", "metrics"]


def code(*modules):
    """Workflow modules a rule imports: inputs, so that editing one reruns the rule (code trigger)."""
    paths = [BASE / "workflow" / "dogbreed" / f"{m}.py" for m in ("__init__", "rule_runner", *modules)]
    return sorted({str(p) for p in paths})


# Everything shipped to SageMaker as source_dir; training uses all of it but the serving handler,
# so an edit of inference.py redeploys without retuning or retraining. The endpoint gets SERVING_CODE.
CONTAINER_CODE = sorted(str(p) for p in SCRIPTS_DIR.iterdir() if p.is_file() and p.suffix in (".py", ".txt"))
TRAINING_CODE = [p for p in CONTAINER_CODE if Path(p).name != "inference.py"]
SERVING_CODE = [str(SCRIPTS_DIR / name) for name in packaging.SERVING_CODE]
# what the cached features depend on: an edit of train.py retrains on them, it does not re-extract them
FEATURE_CODE = [
    str(SCRIPTS_DIR / name) for name in ("feature_cache.py", "classifier.py", "image_folders.py", "requirements.txt")
]


def backend_settings():
    """The backend's config section, plus what the cloud backends derive from the rest of the config."""
    settings = dict(config["backends"].get(config["backend"], {}))
    if config["backend"] in ("sagemaker", "local_container"):
        objective = config["tuning"]["objective"]
        metrics = [{"Name": objective["metric"], "Regex": objective["regex"]}]
        metrics += [
            {"Name": name, "Regex": f"{name}=([0-9.eE+-]+)"}
            for name in ("train_loss", "train_accuracy", "valid_loss", "valid_accuracy")
            if name != objective["metric"]
        ]
        settings["metric_definitions"] = metrics  # the same regex the local tuner uses
        settings["output_s3_uri"] = settings.get("output_s3_uri") or store.join(config["store"]["uri"], "jobs")
    # not confirm_cloud: it is permission, not an input, so granting it reruns nothing (rule_backend reads it)
    return settings


# Settings only the endpoint reads: kept out of the jobs' params, so changing one redeploys without
# retuning or retraining.
ENDPOINT_SETTINGS = {
    "host",
    "port",
    "threads",
    "max_batch_size",
    "max_batch_delay_ms",
    "torch_threads",
    "channel_timeout",
    "connection_limit",
    "startup_timeout",
    "inference_instance_type",
    "inference_image",
    "inference_framework_version",
    "endpoint_instance_count",
}


def job_resources():
    """What a rule that runs training jobs asks of a cluster executor (config resources:; none matters locally)."""
    wanted = config["resources"]
    return {"mem_mb": wanted["mem_mb"], "runtime": wanted["runtime_minutes"], "gpu": wanted["gpus"]}


def reported_config():
    """The config the run report shows: less what is no input of any result (permission to spend, where runs are
    tracked; the report's Tracking section says where the final run is), so changing those reruns nothing."""
    return {k: v for k, v in config.items() if k not in ("confirm_cloud", "tracking")}


def job_backend_settings():
    """backend_settings() less what only the endpoint reads: what tuning and training jobs get."""
    return {k: v for k, v in backend_settings().items() if k not in ENDPOINT_SETTINGS}


def recording_hyperparameters(final: bool):
    """train.py flags for what a job records: the final training by profiling.debug/profile, trials by
    in_trials. Intervals only when they are used, so changing one does not rerun what ignores it."""
    settings = config["profiling"]
    debug = settings["debug"] if final else settings["in_trials"]
    profile = settings["profile"] if final else settings["in_trials"]
    flags = {"debug": debug, "profile": profile}
    if debug:
        flags["save_interval"] = settings["save_interval"]
    if profile:
        flags["profiler_interval_ms"] = settings["sampling_interval_ms"]
    return flags


# model: keys that are the workflow's, not train.py flags
CACHE_SETTINGS = ("feature_cache", "feature_views")


def fixed_hyperparameters():
    """model settings + config hyperparameters: what every training job gets before tuned values."""
    model = {k: v for k, v in config["model"].items() if k not in CACHE_SETTINGS}
    weights = model["weights"]
    if weights not in ("imagenet", "none"):  # jobs run elsewhere: make a weights path absolute
        model["weights"] = str(Path(weights).expanduser().resolve())
    return {**model, **config["hyperparameters"]}


def uses_feature_cache():
    """True when trials and the final training both train a frozen backbone's head and the cache is on.
    A tuned setting the features depend on cannot be cached once for all trials: refused, one line."""
    if not config["model"]["feature_cache"]:
        return False
    trial = {**config["hyperparameters"], **config["tuning"]["trial_hyperparameters"]}
    if not (config["hyperparameters"].get("freeze_backbone") and trial.get("freeze_backbone")):
        return False
    tuned = sorted(
        set(config["tuning"]["parameters"])
        & {"arch", "weights", "image_size", "resize", "augment", "freeze_backbone", "seed"}
    )
    if tuned:
        raise ValueError(
            f"tuning.parameters tunes {', '.join(tuned)}, on which the cached backbone features depend: "
            f"tune it with model.feature_cache: false, or fix it in the config"
        )
    return True


def feature_hyperparameters():
    """The feature job's flags (scripts/feature_cache.py): what the features depend on, and its loader."""
    fixed = fixed_hyperparameters()
    flags = {
        k: fixed[k] for k in ("arch", "weights", "image_size", "resize", "augment", "seed", "num_workers") if k in fixed
    }
    flags["feature_views"] = config["model"]["feature_views"]
    return flags


FEATURE_CACHE = uses_feature_cache()
# what tune and train read their channels from: the images, or the frozen backbone's features of them
TRAINING_CHANNELS = R("features/channels.json") if FEATURE_CACHE else R("upload.json")
