"""What a job is (docs/architecture.md §1): one answer, for a tuning trial, the final training and the feature
extraction, to "what does this job run, on which data, where, and what is it called".

A rule passes job_config(config, kind) as a param (so a change of anything in it reruns the rule, and nothing
else does); its script turns that, the data and the code into a JobSpec. The spec's name is its identity's
hash (naming.job_name): everything that changes what the job produces or where it runs is in it — the
hyperparameters (config layers, tuned values, the data's digest), the job code, the backend settings of
PLACEMENT, the processes — and nothing that does not (poll_seconds, logs, the endpoint's settings, prices).
A backend that finds a job of that name running or done attaches to it: a changed setting is a new name.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import job_contract as contract

from dogbreed.data import store
from dogbreed.runtime import naming
from dogbreed.training import metrics

# config model: keys that are the workflow's, not job flags
CACHE_SETTINGS = ("feature_cache", "feature_views")
# what the cached backbone features depend on (the job's own flags, less its loader's)
FEATURE_SETTINGS = tuple(
    f for f in contract.FEATURE_FLAGS if f not in contract.FEATURE_LOADER_FLAGS and f != "expect_data"
)
# backend settings that shape what a job produces or where it runs: part of its identity
PLACEMENT = {
    "local": (),
    "local_container": (
        "region",
        "training_image",
        "framework_version",
        "py_version",
        "instance_type",
        "instance_count",
    ),
    "sagemaker": (
        "region",
        "framework_version",
        "py_version",
        "instance_type",
        "instance_count",
        "use_spot",
        "sagemaker_profiler",
    ),
}
# backend settings only the endpoint reads: kept out of the jobs' params, so changing one redeploys without
# retuning or retraining
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
    "endpoint",
    "serverless_memory_mb",
    "serverless_max_concurrency",
    "serverless_price_per_gb_second",
}
# backend settings that change how fast a job starts, never what it makes: out of every rule's params (changing one
# reruns nothing); rule_backend gives them to the backend from the config
RUN_SETTINGS = {"preload"}


def merge(*layers) -> dict:
    """The one place a job's hyperparameters are merged: later layers win (defaults < the config's
    hyperparameters < a trial's overrides < tuned values < the data check)."""
    merged = {}
    for layer in layers:
        merged.update(layer or {})
    return merged


def _without_run_settings(section) -> dict:
    return {k: v for k, v in (section or {}).items() if k not in RUN_SETTINGS}


def backend_settings(config) -> dict:
    """The backend's config section, plus what the cloud backends derive from the rest of the config. Not
    confirm_cloud: it is permission, not an input, so granting it reruns nothing (rule_runner reads it); nor the
    RUN_SETTINGS (rule_backend reads them)."""
    settings = _without_run_settings(config["backends"].get(config["backend"], {}))
    if config["backend"] in ("sagemaker", "local_container"):
        settings["metric_definitions"] = metrics.metric_definitions(config["tuning"]["objective"])
        settings["output_s3_uri"] = settings.get("output_s3_uri") or store.join(config["store"]["uri"], "jobs")
    return settings


def result_config(config) -> dict:
    """The config less what is no input of any result: permission to spend, where runs are tracked (the report's
    Tracking section says where the final run is) and the backends' RUN_SETTINGS. The run report shows it as its
    param, so changing those reruns nothing."""
    kept = {k: v for k, v in config.items() if k not in ("confirm_cloud", "tracking")}
    if "backends" in kept:
        kept["backends"] = {name: _without_run_settings(section) for name, section in kept["backends"].items()}
    return kept


def job_backend_settings(config) -> dict:
    """backend_settings less what only the endpoint reads: what a job's backend gets."""
    return {k: v for k, v in backend_settings(config).items() if k not in ENDPOINT_SETTINGS}


def instances(config, kind) -> int:
    """Instances a job of this kind runs on: the final training's instance_count; trials and the feature
    extraction run one process on one instance."""
    return int(config["backends"].get(config["backend"], {}).get("instance_count", 1)) if kind == "train" else 1


def processes(config, kind) -> int:
    return int(config["training"]["processes"]) if kind == "train" else 1


def placement(config, kind) -> dict:
    settings = backend_settings(config)
    found = {key: settings.get(key) for key in PLACEMENT[config["backend"]]}
    if "instance_count" in found:  # the job's own: trials and the feature extraction run on one instance
        found["instance_count"] = instances(config, kind)
    return found


def model_settings(config) -> dict:
    """config model: as job flags; a weights file made absolute (jobs run in folders of their own)."""
    model = {k: v for k, v in config["model"].items() if k not in CACHE_SETTINGS}
    if model["weights"] not in ("imagenet", "none"):
        model["weights"] = str(Path(model["weights"]).expanduser().resolve())
    return model


def recording(config, kind) -> dict:
    """What a job records: the final training by profiling.debug/profile, trials by in_trials. Intervals only
    when they are used, so changing one does not rerun what ignores it."""
    settings = config["profiling"]
    debug = settings["debug"] if kind == "train" else settings["in_trials"]
    profile = settings["profile"] if kind == "train" else settings["in_trials"]
    flags = {"debug": debug, "profile": profile}
    if debug:
        flags["save_interval"] = settings["save_interval"]
    if profile:
        flags["profiler_interval_ms"] = settings["sampling_interval_ms"]
    return flags


def config_hyperparameters(config, kind) -> dict:
    """A job's hyperparameters from the config alone, before tuned values and the data."""
    if kind == "features":
        layers = merge(
            model_settings(config), config["hyperparameters"], {"feature_views": config["model"]["feature_views"]}
        )
        return {k: layers[k] for k in (*FEATURE_SETTINGS, "num_workers") if k in layers}
    trial = config["tuning"]["trial_hyperparameters"] if kind == "trial" else {}
    return merge(model_settings(config), config["hyperparameters"], recording(config, kind), trial)


def searched(tuning: dict) -> dict:
    """The tuning spec less how many trials run and how many at once: a study grows max_jobs without a new name."""
    return {k: v for k, v in tuning.items() if k not in ("max_jobs", "max_parallel_jobs")}


def job_config(config, kind) -> dict:
    """Everything of the config that shapes a job of this kind ("trial": the tuning study's, "train", "features"):
    a rule's param, so that a change here reruns the rule and nothing else does."""
    found = {
        "kind": kind,
        "backend": config["backend"],
        "hyperparameters": config_hyperparameters(config, kind),
        "placement": placement(config, kind),
        "processes": processes(config, kind),
        "instances": instances(config, kind),
    }
    if kind == "trial":
        found["search"] = searched(config["tuning"])
    return found


def uses_feature_cache(config) -> bool:
    """True when trials and the final training both train a frozen backbone's head and the cache is on.
    A tuned setting the features depend on cannot be cached once for all trials: refused, one line."""
    if not config["model"]["feature_cache"]:
        return False
    trial = merge(config["hyperparameters"], config["tuning"]["trial_hyperparameters"])
    if not (config["hyperparameters"].get("freeze_backbone") and trial.get("freeze_backbone")):
        return False
    tuned = sorted(set(config["tuning"]["parameters"]) & {*FEATURE_SETTINGS, "freeze_backbone"})
    if tuned:
        raise ValueError(
            f"tuning.parameters tunes {', '.join(tuned)}, on which the cached backbone features depend: "
            f"tune it with model.feature_cache: false, or fix it in the config"
        )
    return True


@dataclass(frozen=True)
class JobSpec:
    kind: str
    name: str
    hyperparameters: dict  # the job's flags, whole (a trial's: before its tuned values)
    channels: dict  # {channel: store URI}
    placement: dict
    processes: int
    instances: int

    @property
    def key(self) -> str:
        return naming.key_of(self.name)


def job_spec(job: dict, channels: dict, digests: dict, code_files, tuned=None) -> JobSpec:
    """The job of job_config `job` on these channels ({channel: URI}; digests: {channel: channel_digest}, which
    the job checks its data against) running this code, with tuned values (the final training's)."""
    data = {"expect_data": contract.expect_data({c: digests[c] for c in channels})} if digests else {}
    hyperparameters = merge(job["hyperparameters"], tuned, data)
    # where the data are stored is no part of it: their content is (expect_data)
    identity = [job["kind"], hyperparameters, naming.code_digest(code_files), job["placement"], job.get("search")]
    if job["processes"] > 1:  # DDP across processes is another job (its checkpoints are not one process's)
        identity.append(job["processes"])
    return JobSpec(
        job["kind"],
        naming.job_name(job["kind"], identity),
        hyperparameters,
        dict(channels),
        job["placement"],
        job["processes"],
        job["instances"],
    )


def read_channels(channels_json, names=("train", "valid")) -> tuple:
    """({channel: URI}, {channel: digest}) of an upload.json or features/channels.json."""
    recorded = json.loads(Path(channels_json).read_text())
    return {n: recorded["channels"][n] for n in names}, {
        n: recorded.get("digests", {}).get(n) for n in names if recorded.get("digests", {}).get(n)
    }
