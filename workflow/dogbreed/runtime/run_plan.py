"""The run plan (docs/architecture.md §1): what a run will do and what it may cost, and every refusal, from the
config alone — before any side effect and before any network request (no STS, Describe* or S3 call).

The Snakefile checks the refusals when it reads the config, so a refused run stops before any rule runs (and a
setting changed after the upload is refused before any job, never after another one ran and billed). The upload
rule, the run's first side effect, shows the plan and on SageMaker its cost, and asks for confirm_cloud. The
backends refuse a job's shape with the same functions (job_shape_problems) first thing when called directly.
"""

import ipaddress
from dataclasses import dataclass

from dogbreed.training import backbones, jobspec
from dogbreed.tuning import spec as tuning_spec

# PyTorch 2.8's CUDA builds no longer run on Volta (sm_70): the V100s of ml.p3.* cannot train with them.
VOLTA_INSTANCES = ("ml.p3.", "ml.p3dn.")
# SageMaker instance families without a GPU: torch_distributed (a process per GPU) does not run there
CPU_FAMILIES = ("ml.m", "ml.c", "ml.r", "ml.t")
# GPUs per instance, where an instance type's size does not say it (the rest of each family has one)
GPUS = {
    "ml.g4dn.12xlarge": 4,
    "ml.g4dn.metal": 8,
    "ml.g5.12xlarge": 4,
    "ml.g5.24xlarge": 4,
    "ml.g5.48xlarge": 8,
    "ml.g6.12xlarge": 4,
    "ml.g6.24xlarge": 4,
    "ml.g6.48xlarge": 8,
    "ml.g6e.12xlarge": 4,
    "ml.g6e.24xlarge": 4,
    "ml.g6e.48xlarge": 8,
    "ml.p3.8xlarge": 4,
    "ml.p3.16xlarge": 8,
    "ml.p3dn.24xlarge": 8,
    "ml.p4d.24xlarge": 8,
    "ml.p4de.24xlarge": 8,
    "ml.p5.48xlarge": 8,
    "ml.p5e.48xlarge": 8,
    "ml.p5en.48xlarge": 8,
}
SINGLE_GPU_FAMILIES = ("ml.g4dn.", "ml.g5.", "ml.g6.", "ml.g6e.", "ml.p3.")
PLACEHOLDER = "YOUR-"  # what config/sagemaker.yaml ships in place of a bucket, an account, a role


class PlanRefused(ValueError):
    """The config asks for something that cannot or may not run; the message names the settings."""


def gpus_per_instance(instance_type: str):
    """GPUs of one instance of this type; 0 for a CPU family; None when it is not known here."""
    if instance_type in GPUS:
        return GPUS[instance_type]
    if instance_type.startswith(CPU_FAMILIES):
        return 0
    return 1 if instance_type.startswith(SINGLE_GPU_FAMILIES) else None


def job_shape_problems(backend: str, settings: dict, processes: int, instances: int) -> list:
    """What is wrong with a job of `processes` DDP processes on `instances` instances of the backend's settings."""
    key = f"backends.{backend}"
    if backend == "local":
        return []
    if backend == "local_container":
        if int(settings.get("instance_count", 1)) > 1:
            return [
                (
                    f"{key}.instance_count is {settings['instance_count']}, but local mode runs each job in one "
                    f"container on this machine: set it to 1 (training.processes > 1 trains with DDP inside that container)"
                )
            ]
        return []
    problems = []
    instance_type = str(settings.get("instance_type", ""))
    version = tuple(int(p) for p in str(settings.get("framework_version", "0")).split(".")[:2] if p.isdigit())
    if instance_type.startswith(VOLTA_INSTANCES) and version >= (2, 8):
        problems.append(
            f"{key}.instance_type {instance_type} has V100 GPUs (CUDA sm_70), which the PyTorch "
            f"{settings['framework_version']} training image no longer supports: choose ml.g4dn, ml.g5, "
            f"ml.g6 or ml.p4d instances"
        )
    if settings.get("use_spot") and float(settings.get("max_wait_hours", 8)) < float(settings.get("max_run_hours", 4)):
        problems.append(
            f"{key}.max_wait_hours ({settings.get('max_wait_hours', 8)}) is below max_run_hours "
            f"({settings.get('max_run_hours', 4)}): a spot job waits at least as long as it runs; raise "
            f"max_wait_hours or lower max_run_hours"
        )
    if processes == 1 and instances > 1:
        problems.append(
            f"{key}.instance_count is {instances}, but training.processes is 1: the {instances} instances "
            f"would each train the same model alone, at {instances}× the price; set training.processes to "
            f"2 or more (DDP across the instances' GPUs with torch_distributed), or instance_count to 1"
        )
    gpus = gpus_per_instance(instance_type)
    if processes > 1 and gpus == 0:
        problems.append(
            f"training.processes is {processes}, but {key}.instance_type {instance_type} has no GPU: "
            f"SageMaker's torch_distributed starts a process per GPU; choose a GPU instance, or processes: 1"
        )
    elif processes > 1 and gpus and processes != gpus * instances:
        problems.append(
            f"training.processes is {processes}, but {instances} × {instance_type} have {gpus * instances} "
            f"GPU(s), and SageMaker's torch_distributed starts one process per GPU: set training.processes "
            f"to {gpus * instances}" + (", or choose instances with more GPUs" if gpus * instances == 1 else "")
        )
    if processes > 1:
        from dogbreed.backends import containers  # the SDK's own lists (imported only for a DDP job on SageMaker)

        full, supported = containers.torch_distributed_version(settings.get("framework_version", ""))
        if full is None:
            problems.append(
                f"training.processes is {processes}, but SageMaker's torch_distributed launcher does not take "
                f"{key}.framework_version {settings.get('framework_version')}: set it to one it takes "
                f"({', '.join(supported)})"
            )
    return problems


def local_file_problems(backend: str, hyperparameters: dict) -> list:
    """A job in a container (SageMaker, local mode) cannot read a path on this machine."""
    weights = str(hyperparameters.get("weights", "imagenet"))
    if backend == "local" or weights in ("imagenet", "none"):
        return []
    return [
        (
            f"model.weights is a file on this machine ({weights}), which a job in a SageMaker container cannot "
            f"read: use imagenet or none with this backend, or the local backend for that file"
        )
    ]


def placeholder_problems(settings: dict) -> list:
    """{key: value}: a value still holding the shipped placeholder, naming the key."""
    return [
        f"{key} is still the placeholder {value!r} from config/sagemaker.yaml: set it to your own (docs/sagemaker.md) "
        f"before anything is sent to AWS"
        for key, value in settings.items()
        if PLACEHOLDER in str(value)
    ]


def exposure_problems(backend: str, settings: dict) -> list:
    """An endpoint this machine serves answers whoever reaches its address, without authentication: it binds a
    loopback address only. (The container's inference toolkit gives the handler no request headers to check a token
    in, so no token is offered in place of that.)"""
    if backend not in ("local", "local_container"):
        return []
    host = str(settings.get("host", "127.0.0.1"))
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name, which may resolve to any address
        loopback = False
    if loopback:
        return []
    return [
        (
            f"backends.{backend}.host is {host!r}: the endpoint would answer anyone who reaches that address, and it "
            f"checks no credentials; keep it on 127.0.0.1 and reach it from elsewhere through an SSH tunnel or a reverse "
            f"proxy that authenticates (docs/endpoint.md: who can reach it)"
        )
    ]


def store_problems(uri: str) -> list:
    if uri.startswith("s3://"):
        return []
    return [f"the sagemaker backend reads channels from S3: set store.uri to s3://bucket/prefix (now {uri})"]


def refusals(config) -> list:
    """Every reason the configured run may not start, one line each; [] when it may."""
    backend = config["backend"]
    settings = jobspec.backend_settings(config)
    problems = tuning_spec.problems(config["tuning"], None, backend)
    problems += local_file_problems(backend, jobspec.model_settings(config))
    problems += exposure_problems(backend, settings)
    arch = config.get("model", {}).get("arch", "resnet18")
    problems += backbones.image_problems(backend, settings, arch)  # what the framework images' torchvision builds
    if backend == "sagemaker":  # (the shipped placeholders are refused when the plan is approved: a dry run plans)
        problems += store_problems(config["store"]["uri"])
    for kind in ("trial", "features", "train"):
        for problem in job_shape_problems(
            backend, settings, jobspec.processes(config, kind), jobspec.instances(config, kind)
        ):
            if problem not in problems:
                problems.append(problem)
    return problems


def refuse(problems: list):
    if problems:
        raise PlanRefused("; ".join(problems))


def check(config):
    """Refuse the run, in one line naming the settings, when it may not start."""
    refuse(refusals(config))


@dataclass
class Step:
    what: str
    priced_as: str = ""  # its cost line's name ("": nothing to pay)
    jobs: int = 0  # training jobs (0: not a training job)
    instances: int = 1  # each job's


def steps(config) -> list:
    """The run's steps that start jobs or endpoints, in order."""
    found = [Step(f"upload the channels to {config['store']['uri']}")]
    if jobspec.uses_feature_cache(config):
        found.append(Step("a feature-extraction job", "feature-extraction job", jobs=1))
    trials = tuning_spec.max_trials(config["tuning"])
    found.append(Step(f"a tuning job of {trials} trials", f"tuning job ({trials} trials)", jobs=trials))
    instances = jobspec.instances(config, "train")
    found.append(
        Step(
            "a final training job" + (f" on {instances} instances" if instances > 1 else ""),
            "training job",
            jobs=1,
            instances=instances,
        )
    )
    serverless = serverless_endpoint(jobspec.backend_settings(config))
    endpoint = "a serverless endpoint (billed per request" if serverless else "a real-time endpoint (billed hourly"
    found.append(Step(f"{endpoint} until `snakemake teardown`)", "endpoint"))
    return found


def cost_line(what, instance_type, count, hours, prices) -> tuple:
    """(dollars or None, a line saying how it was estimated)."""
    price = prices.get(instance_type)
    if price is None:
        return None, (
            f"{what}: {count} × {instance_type} for up to {hours:g} h (no price for {instance_type} in "
            f"backends.sagemaker.prices_per_hour)"
        )
    dollars = price * count * hours
    return dollars, f"{what}: {count} × {instance_type} × up to {hours:g} h × ${price}/h = at most ${dollars:,.2f}"


def training_cost(settings, what, jobs=1, instances=1) -> tuple:
    """An upper bound: each job at max_run_hours, on-demand prices. SageMaker bills a job's training time, which
    max_run bounds with spot too (the wait for spot capacity, up to max_wait, is not billed; spot bills less)."""
    hours = float(settings.get("max_run_hours", 4))
    return cost_line(what, settings["instance_type"], instances * jobs, hours, settings.get("prices_per_hour", {}))


# what a serverless endpoint takes of a request: 60 s of compute at most (SageMaker's limit), and 4 MB each way
SERVERLESS_MAX_SECONDS = 60
SERVERLESS_MAX_REQUEST_BYTES = 4_000_000


def serverless_endpoint(settings) -> bool:
    """Whether the backend's settings deploy a serverless endpoint (backends.sagemaker.endpoint, serverless unless
    set; no other backend has the key)."""
    return settings.get("endpoint", "serverless") == "serverless"


def endpoint_cost(settings, what) -> tuple:
    """How the endpoint bills. Serverless: per second of compute of each request, by its memory, nothing while idle
    (dollars 0: the run's own requests are seconds); instance: every hour until teardown, its first day said."""
    if serverless_endpoint(settings):
        memory_mb = int(settings.get("serverless_memory_mb", 3072))
        per_second = float(settings.get("serverless_price_per_gb_second", 0.00002)) * memory_mb / 1024
        return 0.0, (
            f"{what}: serverless, {memory_mb} MB: ${per_second:.6f} per second of compute, billed per request "
            f"(at most {SERVERLESS_MAX_SECONDS} s each: ${per_second * SERVERLESS_MAX_SECONDS:.4f}); nothing while idle"
        )
    dollars, line = cost_line(
        what,
        settings["inference_instance_type"],
        int(settings.get("endpoint_instance_count", 1)),
        24,
        settings.get("prices_per_hour", {}),
    )
    return dollars, line.replace("up to 24 h", "24 h").replace("= at most", "=") + " for its first day"


def costs(config) -> list:
    """[(dollars or None, line)] of every paid step of the plan, on SageMaker (nothing is paid for elsewhere)."""
    if config["backend"] != "sagemaker":
        return []
    settings = jobspec.backend_settings(config)
    lines = []
    for step in steps(config):
        if step.jobs:
            lines.append(training_cost(settings, step.priced_as, step.jobs, step.instances))
        elif step.priced_as:
            lines.append(endpoint_cost(settings, step.priced_as))
    return lines


def describe(config) -> str:
    return f"plan on {config['backend']}: " + ", ".join(step.what for step in steps(config))
