"""What the `sagemaker` and `local_container` backends share: a training job's request, and its artifacts brought home.

Both send the same CreateTrainingJob request, built here from sagemaker-core's shapes and serialized by it (SDK v3):
to SageMaker through boto3, or to the SDK's local-mode client, which runs it under Docker. The job runs under the
framework image's training toolkit (the DLC contract the v2 estimators used, and v3's tuner still uses for its trials):
`sagemaker_program` and `sagemaker_submit_directory` name the code, every hyperparameter is JSON-encoded, and the
toolkit hands them to train.py as flags. Why not v3's ModelTrainer, or the resources' create(): docs/architecture.md
§7.
"""

import json
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import job_contract as contract

from dogbreed.data import store
from dogbreed.runtime import run_plan
from dogbreed.training import jobspec


def refuse_job_shape(backend_name, settings, hyperparameters, processes, instances):
    """What the run plan refuses of a job (run_plan.py), refused again when a backend is called directly: a weights
    file on this machine, which no container reads, and a DDP shape the backend's instances cannot take."""
    run_plan.refuse(
        run_plan.local_file_problems(backend_name, hyperparameters)
        + run_plan.job_shape_problems(backend_name, settings, processes, instances)
    )


def toolkit_hyperparameters(
    hyperparameters, *, job_name, entry_point, code_uri, region, processes=1, instance_type="", cpu_processes=False
):
    """The job's HyperParameters as the training toolkit reads them: each value JSON-encoded (the toolkit decodes
    them; train.py's flags take the text), and the toolkit's own sagemaker_* keys, which never reach train.py. processes
    > 1: the toolkit starts train.py under torchrun (its torch_distributed launcher): a process per GPU of the instance
    named, or with cpu_processes (local mode on a CPU) that many processes."""
    toolkit = {
        "sagemaker_submit_directory": code_uri,
        "sagemaker_program": entry_point,
        "sagemaker_container_log_level": 20,
        "sagemaker_job_name": job_name,
        "sagemaker_region": region,
    }
    if processes > 1:
        toolkit["sagemaker_torch_distributed_enabled"] = True
        if instance_type:  # a SageMaker instance's: the launcher's settings follow it
            toolkit["sagemaker_instance_type"] = instance_type
        if cpu_processes:
            toolkit["sagemaker_mpi_num_of_processes_per_host"] = processes
    return {str(k): json.dumps(v) for k, v in jobspec.merge(hyperparameters, toolkit).items()}


def job_hyperparameters(sent: dict) -> dict:
    """toolkit_hyperparameters' values back: each JSON-decoded (a value that is not JSON, as a job launched by other
    means may have, stays its text), without the toolkit's own sagemaker_* keys."""

    def decoded(text):
        try:
            return json.loads(text)
        except (TypeError, ValueError):
            return text

    return {k: decoded(v) for k, v in sent.items() if not k.startswith("sagemaker_")}


def channels_config(channels: dict) -> list:
    """{name: uri} → the request's InputDataConfig (local mode reads file:// URIs from the same shape)."""
    from sagemaker.core.shapes import Channel, DataSource, S3DataSource

    return [
        Channel(
            channel_name=name,
            data_source=DataSource(
                s3_data_source=S3DataSource(
                    s3_data_type="S3Prefix", s3_uri=uri, s3_data_distribution_type="FullyReplicated"
                )
            ),
        )
        for name, uri in channels.items()
    ]


def metric_definitions(settings) -> list:
    from sagemaker.core.shapes import MetricDefinition

    return [MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in settings["metric_definitions"]]


def job_definition(settings, *, role, hyperparameters, channels, output_uri, checkpoint=None) -> dict:
    """What a training job and a tuning job's trials have in common, as sagemaker-core's shapes under the snake_case
    names of the request's keys (a tuning job's definition calls the hyperparameters static_hyper_parameters).
    hyperparameters: toolkit_hyperparameters'. Spot: checkpoint is the job's own prefix, and the job may wait
    max_wait_hours for capacity."""
    from sagemaker.core.shapes import CheckpointConfig, OutputDataConfig, StoppingCondition

    spot = bool(settings.get("use_spot"))
    definition = {
        "role_arn": role,
        "hyper_parameters": hyperparameters,
        "input_data_config": channels_config(channels),
        "output_data_config": OutputDataConfig(s3_output_path=output_uri),
        "stopping_condition": StoppingCondition(
            max_runtime_in_seconds=int(float(settings.get("max_run_hours", 4)) * 3600),
            **({"max_wait_time_in_seconds": int(float(settings.get("max_wait_hours", 8)) * 3600)} if spot else {}),
        ),
    }
    if spot:
        definition.update(enable_managed_spot_training=True, checkpoint_config=CheckpointConfig(s3_uri=checkpoint))
    return definition


def training_job_request(settings, *, job_name, image, instance_type, definition, instances=1, environment=None):
    """The CreateTrainingJob request as the API takes it; definition: job_definition's."""
    from sagemaker.core.shapes import AlgorithmSpecification, ResourceConfig

    request = {
        "training_job_name": job_name,
        "algorithm_specification": AlgorithmSpecification(
            training_image=image,
            training_input_mode="File",
            metric_definitions=metric_definitions(settings),
            enable_sage_maker_metrics_time_series=True,
        ),
        "resource_config": ResourceConfig(
            instance_type=instance_type,
            instance_count=instances,
            volume_size_in_gb=int(settings.get("volume_size_gb", 30)),
        ),
        **definition,
    }
    if environment:
        request["environment"] = {str(k): str(v) for k, v in environment.items()}
    return api_request(request)


def api_request(request: dict) -> dict:
    """A request of sagemaker-core's shapes under snake_case keys → the API's request (PascalCase, what botocore and
    the SDK's local-mode client take), by the SDK's own serializer. It leaves out a shape's fields that are falsy
    (0, "", False): a caller that sends one puts it back into the result."""
    from sagemaker.core.utils.utils import serialize, snake_to_pascal

    return {snake_to_pascal(key): value for key, value in serialize(request).items()}


# --- artifacts ------------------------------------------------------------------------------------
def collect(backend_name, name, description, jobs_dir, on_line, keep_model, started) -> dict:
    """Bring the job's artifacts home: model.tar.gz, and output.tar.gz (metrics, debug, profiler)."""
    job = Path(jobs_dir) / name
    shutil.rmtree(job / "output", ignore_errors=True)  # a rerun's; the job's log.txt beside it stays
    (job / "output/data").mkdir(parents=True)
    s3_model = description["ModelArtifacts"]["S3ModelArtifacts"]
    result = {
        "job_name": name,
        "backend": backend_name,
        "status": "Completed",
        "s3_model_uri": s3_model,
        "log": f"CloudWatch log group /aws/sagemaker/TrainingJobs, streams {name}/*",
        "output_dir": str(job / "output"),
        "hyperparameters": description.get("HyperParameters", {}),
        "seconds": description.get("TrainingTimeInSeconds") or round(time.time() - started, 1),
    }
    if keep_model:
        download(s3_model, job / "output/model.tar.gz")
        result["model_uri"] = store.file_uri(job / "output/model.tar.gz")
    output_tar = s3_model.rsplit("/", 1)[0] + "/output.tar.gz"
    if download(output_tar, job / "output/output.tar.gz", missing_ok=True):
        extract_output_data(job / "output/output.tar.gz", job / "output/data")
    result["metrics"] = contract.read_metrics_file(job / "output/data" / contract.METRICS_FILE)
    if on_line is not None:  # the metric lines, for a tuner that reads them (local_container trials)
        for epoch in result["metrics"]:
            on_line(contract.format_epoch_line(epoch) + "\n")
    return result


def download(uri, path, missing_ok=False) -> bool:
    if uri.startswith("file://"):  # local mode
        if missing_ok and not store.local_path(uri).exists():
            return False
        shutil.copyfile(store.local_path(uri), path)
        return True
    return store.S3Store().download_object(uri, path, missing_ok) is not None


def extract_output_data(output_tar: Path, target: Path):
    """output.tar.gz → target, holding what train.py wrote into SM_OUTPUT_DATA_DIR. SageMaker packs the
    contents of /opt/ml/output/data; local mode packs /opt/ml/output itself (data/ beside the
    success or failure marker): unwrap that, so both read the same."""
    with tempfile.TemporaryDirectory(dir=target) as unpacked:
        with tarfile.open(output_tar) as archive:
            archive.extractall(unpacked, filter="data")
        unpacked = Path(unpacked)
        local_mode = (unpacked / "data").is_dir() and any((unpacked / m).exists() for m in ("success", "failure"))
        source = unpacked / "data" if local_mode else unpacked
        for item in source.iterdir():
            shutil.move(str(item), target / item.name)
