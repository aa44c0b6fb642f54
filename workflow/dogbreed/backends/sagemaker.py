"""The `sagemaker` backend: SageMaker training and tuning jobs, real-time endpoints.

Requests are built from the SageMaker Python SDK v3's sagemaker-core shapes, serialized by it and sent through boto3,
with the user's SDK defaults config (subnets, KMS keys) merged in; the training job's request is the one the
`local_container` backend runs under Docker (sagemaker_jobs.py, docs/architecture.md §7). Job and
endpoint names are derived from their inputs, so a rerun attaches to a job of the same name that is
still running (or reuses one that completed) instead of launching a duplicate; Ctrl-C or Snakemake
stopping the rule stops the cloud job it launched. Cloud work is priced first and refused without
confirm_cloud: true.
"""

import contextlib
import re
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import job_contract as contract

from dogbreed.backends import containers, sagemaker_jobs
from dogbreed.backends.base import (
    TOOLKIT_SERVING_ENVIRONMENT,
    Backend,
    forget_endpoint_state,
    read_endpoint_state,
    write_endpoint_state,
)
from dogbreed.backends.errors import EndpointGone, EndpointRefused, EndpointUnavailable, JobFailed
from dogbreed.data import store
from dogbreed.runtime import naming, run_guard, run_plan
from dogbreed.runtime.rule_runner import say
from dogbreed.training import jobspec
from dogbreed.tuning import sagemaker_tuner
from dogbreed.tuning import spec as tuning_spec

# sagemaker-runtime's answers that sending the request again may fix: throttled, the model still loading, a
# passing service fault (botocore's own retries are spent by the time one reaches us)
BUSY_ERROR_CODES = {
    "ThrottlingException",
    "ModelNotReadyException",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalDependencyException",
}
# a CPU instance type, to name the CPU inference image a serverless endpoint runs
SERVERLESS_IMAGE_INSTANCE = "ml.m5.large"
# what a real-time endpoint on instances takes of a request (sagemaker-runtime's limit)
INSTANCE_MAX_REQUEST_BYTES = 6_291_456
# where SageMaker writes a training job's logs: a stream per instance, <job>/algo-<n>-<time>
TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
# what the requests take of the user's SDK defaults config, by its section: where the jobs and the endpoint run
# (subnets, security groups), their KMS keys; a tuning job's trials take the TrainingJob section's. Not a job's
# network isolation: an isolated job could not fetch its code from S3 (nor reach its MLflow server).
USER_DEFAULTS = {
    "TrainingJob": (
        "VpcConfig",
        "OutputDataConfig",
        "ResourceConfig",
        "EnableInterContainerTrafficEncryption",
        "Environment",
    ),
    "Model": ("VpcConfig", "EnableNetworkIsolation"),
    "EndpointConfig": ("KmsKeyId",),
}


class CloudCostNotConfirmed(RuntimeError):
    pass


class SageMakerBackend(Backend):
    name = "sagemaker"

    def __init__(self, settings: dict):
        self.settings = settings
        self._boto_session, self._clients, self._sdk_config = None, {}, None

    # --- sessions and names ---------------------------------------------------------------------
    @property
    def boto_session(self):
        """The boto3 session every request goes through (credentials from the standard AWS chain)."""
        if self._boto_session is None:
            import boto3

            self._boto_session = boto3.session.Session(region_name=self.settings.get("region") or None)
        return self._boto_session

    @property
    def region(self) -> str:
        if not self.boto_session.region_name:
            raise JobFailed(
                "no AWS region: set backends.sagemaker.region, or give the AWS profile one (aws configure, "
                "AWS_DEFAULT_REGION)"
            )
        return self.boto_session.region_name

    def _client(self, service, region=None):
        """One client per service and region, so that every request of a service goes through the same one."""
        key = (service, region or self.region)
        if key not in self._clients:
            self._clients[key] = self.boto_session.client(service, region_name=key[1])
        return self._clients[key]

    @property
    def client(self):
        return self._client("sagemaker")

    @property
    def runtime(self):
        return self._client("sagemaker-runtime")

    def _role(self):
        role = self.settings.get("role")
        if not role:
            raise JobFailed(
                "backends.sagemaker.role is empty: set it to the ARN of an IAM role SageMaker can assume "
                "(docs/sagemaker.md: IAM)"
            )
        return role

    def _tags(self):
        return [{"Key": str(k), "Value": str(v)} for k, v in (self.settings.get("tags") or {}).items()]

    def _user_defaults(self, resource: str) -> dict:
        """What the user's SDK defaults config (~/.config/sagemaker/config.yaml, the admin's, or
        SAGEMAKER_USER_CONFIG_OVERRIDE) sets for `resource` (a key of USER_DEFAULTS), as the API's keys, as v2's
        estimators and models took it (sagemaker-core's own create() calls read another layout of it)."""
        from sagemaker.core.common_utils import instance_supports_kms
        from sagemaker.core.config.config import load_sagemaker_config

        if self._sdk_config is None:  # read once: a job's request, its code upload and a deploy each ask
            self._sdk_config = load_sagemaker_config() or {}
        section = (self._sdk_config.get("SageMaker") or {}).get(resource) or {}
        taken = {k: v for k, v in section.items() if k in USER_DEFAULTS[resource]}
        vpc = taken.get("VpcConfig") or {}
        if not (vpc.get("Subnets") and vpc.get("SecurityGroupIds")):  # the API takes both or neither (as v2 did)
            taken.pop("VpcConfig", None)
        if resource == "TrainingJob" and not instance_supports_kms(self.settings["instance_type"]):
            # instances with local storage (g4dn, g5 …) encrypt it themselves: the API refuses a volume key there
            taken["ResourceConfig"] = {
                k: v for k, v in taken.get("ResourceConfig", {}).items() if k != "VolumeKmsKeyId"
            }
        return taken

    # --- cost safety ----------------------------------------------------------------------------
    def approve_run(self, plan: str, costs: list, store_uri: str):
        """The whole run's plan and estimate (run_plan.py), before anything reaches S3; refused unless confirmed,
        and refused outright while a setting still holds the shipped placeholder."""
        run_plan.refuse(
            run_plan.placeholder_problems({"store.uri": store_uri})
        )  # the settings' own: confirm() checks them
        say(plan)
        self.confirm(costs)

    def confirm(self, lines):
        """Print the estimate; refuse unless confirm_cloud is true, and any setting still a placeholder."""
        run_plan.refuse(run_plan.placeholder_problems({f"backends.sagemaker.{k}": v for k, v in self.settings.items()}))
        total = sum(d for d, _ in lines if d is not None)
        say("cost estimate (prices from backends.sagemaker.prices_per_hour; check your region's prices):")
        for _, line in lines:
            say(f"  {line}")
        say(
            f"  total of the above: ${total:,.2f}"
            + (" plus unpriced items" if any(d is None for d, _ in lines) else "")
        )
        if not self.settings.get("confirm_cloud"):
            raise CloudCostNotConfirmed(
                "refusing to start paid SageMaker work without confirmation: rerun with "
                "--config confirm_cloud=true once the estimate above is acceptable"
            )

    # --- upload ---------------------------------------------------------------------------------
    def upload(self, local_dir, uri) -> dict:
        run_plan.refuse(run_plan.store_problems(uri))
        return store.sync(local_dir, uri)

    # --- training jobs --------------------------------------------------------------------------
    def _upload_code(self, job_name, source_dir, entry_point) -> str:
        """sourcedir.tar.gz beside the job's outputs (<output>/<job>/source/), not at the bucket's root, where a
        policy scoped to the store's prefix would deny the upload (the SDK's own packing and upload)."""
        from sagemaker.core import fw_utils

        bucket, _, prefix = self.settings["output_s3_uri"][len("s3://") :].partition("/")
        uploaded = fw_utils.tar_and_upload_dir(
            session=self.boto_session,
            bucket=bucket,
            s3_key_prefix="/".join(part for part in (prefix.strip("/"), job_name, "source") if part),
            script=entry_point,
            directory=str(source_dir),
            kms_key=self._user_defaults("TrainingJob").get("OutputDataConfig", {}).get("KmsKeyId"),
            s3_resource=self.boto_session.resource("s3"),
        )
        return uploaded.s3_prefix

    def _image(self, scope):
        s = self.settings
        if scope == "training":
            return containers.framework_image(
                self.region, s["framework_version"], s["py_version"], s["instance_type"], scope
            )
        # a serverless endpoint runs on CPUs: the CPU image, whatever inference_instance_type says
        serverless = run_plan.serverless_endpoint(s)
        instance_type = SERVERLESS_IMAGE_INSTANCE if serverless else s["inference_instance_type"]
        return containers.framework_image(
            self.region, s["inference_framework_version"], s["py_version"], instance_type, scope
        )

    def _job_definition(
        self, job_name, hyperparameters, channels, code_uri, entry_point="train.py", processes=1
    ) -> dict:
        """A job's part of the request that a tuning job's trials share (sagemaker_jobs.job_definition). job_name
        names its own checkpoint prefix (spot training); a tuning job's name is its trials' shared one."""
        s = self.settings
        encoded = sagemaker_jobs.toolkit_hyperparameters(
            hyperparameters,
            job_name=job_name,
            entry_point=entry_point,
            code_uri=code_uri,
            region=self.region,
            processes=processes,
            instance_type=s["instance_type"],
        )
        return sagemaker_jobs.job_definition(
            s,
            role=self._role(),
            hyperparameters=encoded,
            channels=channels,
            output_uri=s["output_s3_uri"],
            checkpoint=checkpoint_uri(s, job_name),
        )

    def training_request(
        self,
        job_name,
        hyperparameters,
        channels,
        code_uri,
        entry_point="train.py",
        environment=None,
        processes=1,
        instances=1,
    ) -> dict:
        """The CreateTrainingJob request. code_uri: the uploaded sourcedir.tar.gz; environment: variables for the job
        (its MLflow run); processes > 1: DDP under the training toolkit's torch_distributed launcher (torchrun, a
        process per GPU of every instance); instances: the final training's instance_count (the feature extraction
        runs one process on one instance)."""
        s = self.settings
        request = sagemaker_jobs.training_job_request(
            s,
            job_name=job_name,
            image=self._image("training"),
            instance_type=s["instance_type"],
            instances=instances,
            environment=environment,
            definition=self._job_definition(job_name, hyperparameters, channels, code_uri, entry_point, processes),
        )
        request["Tags"] = self._tags()
        if s.get("sagemaker_profiler"):  # SageMaker's own profiler and report, where the account still has it
            request["ProfilerConfig"] = {
                "S3OutputPath": s["output_s3_uri"],
                "ProfilingIntervalInMilliseconds": 500,
                "DisableProfiler": False,
            }
            request["ProfilerRuleConfigurations"] = [self._profiler_report_rule()]
        else:  # train.py keeps its own profile and debug record (--debug)
            request["ProfilerConfig"] = {"DisableProfiler": True}
        return _merged(self._user_defaults("TrainingJob"), request)

    def _profiler_report_rule(self) -> dict:
        """SageMaker Debugger's built-in ProfilerReport rule, run by the region's rule image (the SDK's)."""
        import smdebug_rulesconfig as rule_configs
        from sagemaker.core.debugger import ProfilerRule, get_rule_container_image_uri

        rule = ProfilerRule.sagemaker(rule_configs.ProfilerReport())
        rule.image_uri = get_rule_container_image_uri(rule.name, self.region)
        return rule.to_profiler_rule_config_dict()

    def refuse_shape(self, hyperparameters, processes, instances):
        sagemaker_jobs.refuse_job_shape(self.name, self.settings, hyperparameters, processes, instances)

    def _describe_job(self, job_name):
        try:
            return self.client.describe_training_job(TrainingJobName=job_name)
        except self.client.exceptions.ClientError as error:
            if _not_found(error):
                return None
            raise

    def _free_job_name(self, job_name):
        """The derived name, or the next `-N` after failed/stopped jobs (SageMaker never reuses a name)."""
        attempt = 1
        while (description := self._describe_job(naming.attempt_name(job_name, attempt))) and description[
            "TrainingJobStatus"
        ] in ("Failed", "Stopped"):
            attempt += 1
        return naming.attempt_name(job_name, attempt), description

    def _pause(self):
        time.sleep(float(self.settings.get("poll_seconds", 30)))

    def _wait(self, what, wait, stop):
        """wait() for the job `what`; stopped when the rule is (documented choice: a stopped rule leaves no job
        billing, and the rerun launches the next attempt), and named in the rule's last line."""
        with run_guard.job_running(what):
            try:
                wait()
            except KeyboardInterrupt:  # Ctrl-C, or a signal through rule_runner
                say(f"interrupted: stopping {what}")
                stop()
                raise

    def train(
        self,
        job_name,
        hyperparameters,
        channels,
        jobs_dir,
        source_dir,
        entry_point="train.py",
        on_line=None,
        echo=True,
        keep_model=True,
        environment=None,
        processes=1,
        instances=1,
    ) -> dict:
        self.refuse_shape(hyperparameters, processes, instances)  # before any request
        started = time.time()
        name, description = self._free_job_name(job_name)
        status = description["TrainingJobStatus"] if description else None
        if status == "Completed":
            print(f"training job {name} already completed: using it")
        elif status in ("InProgress", "Stopping"):
            print(f"training job {name} is still running: attaching to it instead of launching another")
        else:
            self.confirm([run_plan.training_cost(self.settings, f"training job {name}", instances=instances)])
            code_uri = self._upload_code(name, source_dir, entry_point)
            request = self.training_request(
                name, hyperparameters, channels, code_uri, entry_point, environment, processes, instances
            )
            with quota_advice(self.settings, self.region):
                self.client.create_training_job(**request)
            say(f"launched training job {name}")
        self._wait(
            f"SageMaker training job {name}",
            lambda: self._follow_job(name),
            lambda: self.client.stop_training_job(TrainingJobName=name),
        )
        description = self._describe_job(name)
        if description["TrainingJobStatus"] != "Completed":
            raise JobFailed(
                f"training job {name} ended {description['TrainingJobStatus']}: "
                f"{description.get('FailureReason', 'no reason given')} (logs: CloudWatch {TRAINING_LOG_GROUP})"
            )
        # the job's hyperparameters as train.py took them, as the other backends record them (model.json)
        description["HyperParameters"] = sagemaker_jobs.job_hyperparameters(description.get("HyperParameters", {}))
        result = sagemaker_jobs.collect(self.name, name, description, jobs_dir, on_line, keep_model, started)
        if self.settings.get("sagemaker_profiler"):
            self._fetch_sagemaker_profiler_report(
                description, Path(jobs_dir) / name / "output/data/sagemaker-profiler-report"
            )
        return result

    def _follow_job(self, name):
        """Wait until the job ends, saying its status as it changes (logs: Rules, its rules' statuses too), and with
        logs: All its CloudWatch lines as they come. The caller says why a job failed or stopped, from its
        description."""
        said, unseen = None, 0
        lines = JobLogLines(self._client("logs"), name) if self.settings.get("logs", "All") == "All" else None
        while True:
            description = self._describe_job(name)
            if description is None:  # just created, not yet listed: look again
                unseen += 1
                if unseen > 10:
                    raise JobFailed(f"training job {name} was launched but SageMaker does not list it")
                self._pause()
                continue
            if lines is not None:
                lines.print_new()
            status = description["TrainingJobStatus"]
            now = [f"{status} ({description.get('SecondaryStatus', status)})"]
            if self.settings.get("logs") == "Rules":
                now += [
                    f"{rule['RuleConfigurationName']} {rule['RuleEvaluationStatus']}"
                    for rule in description.get("ProfilerRuleEvaluationStatuses", [])
                ]
            if now != said:
                say(f"training job {name}: {', '.join(now)}")
                said = now
            if status not in ("InProgress", "Stopping"):
                if lines is not None:  # what was written after the last look
                    lines.print_new()
                return
            self._pause()

    def _fetch_sagemaker_profiler_report(self, description, target):
        """SageMaker's own ProfilerReport (where the account still runs Debugger rules), beside ours."""
        for rule in description.get("ProfilerRuleEvaluationStatuses", []):
            prefix = f"{description['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{description['TrainingJobName']}/rule-output/{rule['RuleConfigurationName']}/"
            try:
                store.download(prefix, target)
            except Exception as error:  # the report is a bonus; our own report does not depend on it
                print(f"SageMaker's profiler report was not fetched: {error}")

    # --- tuning ---------------------------------------------------------------------------------
    def tune(
        self,
        spec,
        fixed_hyperparameters,
        channels,
        jobs_dir,
        source_dir,
        tuning_name,
        study_db,
        parallel=1,
        tracking=None,
    ):
        """A SageMaker tuning job (tuning/sagemaker_tuner.py). A spec that only grew max_jobs keeps its
        name (tuning_name excludes max_jobs): a new job warm-starts from the finished ones and runs only the
        missing trials; a job still running is attached to."""
        run_plan.refuse(tuning_spec.problems(spec, None, "sagemaker"))  # as the run plan does, before anything is sent
        self.refuse_shape(fixed_hyperparameters, processes=1, instances=1)
        previous = self._tuning_jobs(tuning_name)
        running = [d for d in previous if d["HyperParameterTuningJobStatus"] in ("InProgress", "Stopping")]
        done = [d for d in previous if d["HyperParameterTuningJobStatus"] == "Completed"]
        finished_trials = sum(
            d["ObjectiveStatusCounters"].get("Succeeded", 0) + d["ObjectiveStatusCounters"].get("Failed", 0)
            for d in done
        )
        if running:
            job_name = running[-1]["HyperParameterTuningJobName"]
            print(f"tuning job {job_name} is still running: attaching to it")
        elif not (spec["strategy"] == "Grid" and done) and finished_trials < spec["max_jobs"]:
            job_name = naming.warm_start_name(tuning_name, len(previous))
            self._launch_tuning(spec, fixed_hyperparameters, channels, source_dir, job_name, done, finished_trials)
        else:
            job_name = done[-1]["HyperParameterTuningJobName"]
        self._wait(
            f"SageMaker tuning job {job_name}",
            lambda: self._wait_for_tuning(job_name),
            lambda: self.client.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=job_name),
        )
        names = [d["HyperParameterTuningJobName"] for d in self._tuning_jobs(tuning_name)] or [job_name]
        rows, best = self._trials(spec, names)
        if tracking is not None:  # the trials ran in SageMaker's tuner: their runs are logged when it is done
            tracking.log_finished(
                rows,
                spec,
                [jobspec.merge(fixed_hyperparameters, {n: row[n] for n in spec["parameters"]}) for row in rows],
            )
        return rows, best

    def _launch_tuning(self, spec, fixed_hyperparameters, channels, source_dir, job_name, done, finished_trials):
        """Confirm the new trials' cost, then start the tuning job (warm-started from the finished ones)."""
        from sagemaker.core.shapes import HyperParameterAlgorithmSpecification, HyperParameterTuningResourceConfig

        new_trials, _ = sagemaker_tuner.api_tuning_limits(spec, finished_trials)
        self.confirm(
            [run_plan.training_cost(self.settings, f"tuning job {job_name} ({new_trials} trials)", new_trials)]
        )
        s = self.settings
        code_uri = self._upload_code(job_name, source_dir, "train.py")
        # the tuned names are the tuner's to set in each trial, not static ones too (as v2's tuner left them out);
        # the trials share one checkpoint prefix, the tuning job's own (train.py keeps each trial's checkpoint
        # under its training job's name); each runs one process on one instance
        static = {k: v for k, v in fixed_hyperparameters.items() if k not in spec["parameters"]}
        definition = self._job_definition(job_name, static, channels, code_uri)
        definition.update(
            static_hyper_parameters=definition.pop("hyper_parameters"),
            algorithm_specification=HyperParameterAlgorithmSpecification(
                training_image=self._image("training"),
                training_input_mode="File",
                metric_definitions=sagemaker_jobs.metric_definitions(s),
            ),
            hyper_parameter_tuning_resource_config=HyperParameterTuningResourceConfig(
                instance_type=s["instance_type"], instance_count=1, volume_size_in_gb=int(s.get("volume_size_gb", 30))
            ),
        )
        request = sagemaker_tuner.tuning_job_request(
            spec,
            job_name,
            sagemaker_jobs.api_request(definition),
            finished_trials,
            warm_start_from=sagemaker_tuner.warm_start_parents(done, spec["objective"]["type"]) if done else (),
            tags=self._tags(),
        )
        # the trials take what the user's SDK defaults config says of training jobs (its volume key where trials
        # keep their instances' settings)
        definition = request["TrainingJobDefinition"]
        defaults = self._user_defaults("TrainingJob")
        if volume_key := defaults.get("ResourceConfig", {}).get("VolumeKmsKeyId"):
            definition["HyperParameterTuningResourceConfig"].setdefault("VolumeKmsKeyId", volume_key)
        request["TrainingJobDefinition"] = _merged(
            {k: v for k, v in defaults.items() if k != "ResourceConfig"}, definition
        )
        with quota_advice(self.settings, self.region):
            self.client.create_hyper_parameter_tuning_job(**request)
        say(f"launched tuning job {job_name}")

    def _tuning_jobs(self, tuning_name):
        jobs = []
        for name in (naming.warm_start_name(tuning_name, i) for i in range(50)):
            try:
                jobs.append(self.client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name))
            except self.client.exceptions.ClientError as error:
                if _not_found(error):  # throttling or AccessDenied must not read as "no such job"
                    break
                raise
        return jobs

    def _wait_for_tuning(self, job_name):
        seen, cleaning = None, TrialCheckpoints()
        while True:
            description = self.client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=job_name)
            status = description["HyperParameterTuningJobStatus"]
            counters = {k: n for k, n in (description.get("TrainingJobStatusCounters") or {}).items() if n}
            if counters != seen:  # a line whenever a trial starts or ends, not a still bar for an hour
                seen = counters
                say(
                    f"tuning job {job_name}: {status}; trials "
                    + (", ".join(f"{n} {k}" for k, n in counters.items()) or "none started")
                )
                self._remove_ended_trials_checkpoints(job_name, cleaning)
            if status not in ("InProgress", "Stopping"):
                if status != "Completed":  # its reason: a trial quota, a bad definition, … (none when stopped)
                    reason = description.get("FailureReason")
                    raise JobFailed(f"tuning job {job_name} ended {status}" + (f": {reason}" if reason else ""))
                return
            self._pause()

    def _trial_summaries(self, tuning_job) -> list:
        paginator = self.client.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job")
        return [
            summary
            for page in paginator.paginate(HyperParameterTuningJobName=tuning_job)
            for summary in page["TrainingJobSummaries"]
        ]

    def _remove_ended_trials_checkpoints(self, tuning_job, cleaning: "TrialCheckpoints"):
        """With spot, the trials share the tuning job's checkpoint prefix, and SageMaker copies all of it into every
        trial's container at its start. A trial that ended (completed, stopped early, failed) never resumes (a spot
        interruption keeps a job InProgress), so its checkpoint folder goes now, before later trials copy it.
        Best effort: a store that denies it says so once and is not asked again; the tuning goes on."""
        if not self.settings.get("use_spot") or cleaning.denied:
            return
        try:
            ended = [
                summary["TrainingJobName"]
                for summary in self._trial_summaries(tuning_job)
                if summary["TrainingJobStatus"] in ("Completed", "Stopped", "Failed")
                and summary["TrainingJobName"] not in cleaning.done
            ]
            s3 = store.S3Store() if ended else None
            for trial in ended:
                s3.remove(checkpoint_uri(self.settings, tuning_job) + trial + "/")
                cleaning.done.add(trial)
        except Exception as error:  # throttled or unreachable: tried again when the trial counts next change
            cleaning.denied = isinstance(error, store.StoreAccessDenied) or _denied(error)
            if cleaning.denied:
                say(f"the checkpoints of ended trials of {tuning_job} stay: removing them was denied ({error})")

    def _trials(self, spec, tuning_jobs):
        """Trials table and best trial from the tuning jobs' training jobs (the SDK's analytics calls)."""
        objective = spec["objective"]["metric"]
        rows, number = [], 0
        for tuning_job in tuning_jobs:
            for summary in sorted(self._trial_summaries(tuning_job), key=lambda s: s.get("CreationTime", 0)):
                value = summary.get("FinalHyperParameterTuningJobObjectiveMetric", {}).get("Value")
                row = {
                    "trial": number,
                    "job_name": summary["TrainingJobName"],
                    "status": summary["TrainingJobStatus"],  # SageMaker's names, which the local tuner uses too
                    objective: value if summary["TrainingJobStatus"] == "Completed" else None,
                }
                row.update(
                    {
                        name: sagemaker_tuner.typed_value(
                            spec["parameters"][name], summary["TunedHyperParameters"].get(name)
                        )
                        for name in spec["parameters"]
                    }
                )
                row["tuning_job"] = tuning_job
                rows.append(row)
                number += 1
        best = sagemaker_tuner.best_of(rows, spec)
        if best is None:
            raise JobFailed(f"no trial of {', '.join(tuning_jobs)} completed; see the SageMaker console")
        return rows, best

    # --- endpoints ------------------------------------------------------------------------------
    def deploy(self, model_tar, endpoint_name, state_dir) -> dict:
        """The model, its endpoint config and the endpoint, each named by us (the state file records them for teardown):
        the framework's inference image serves model.tar.gz, whose code/ holds inference.py (the SageMaker inference
        toolkit's handler, as SAGEMAKER_PROGRAM names it)."""
        from sagemaker.core.shapes import ContainerDefinition, ProductionVariant

        s = self.settings
        serverless = run_plan.serverless_endpoint(s)
        dollars, line = run_plan.endpoint_cost(s, f"endpoint {endpoint_name}")
        self.confirm([(dollars, line if serverless else line + "; it bills every hour until `snakemake teardown`")])
        self.teardown(state_dir)
        model_name = naming.model_name(endpoint_name)
        model_uri = self._upload_model(model_tar, model_name)
        state = {
            "backend": self.name,
            "endpoint_name": endpoint_name,
            "model_name": model_name,
            "endpoint_config_name": endpoint_name,
            "region": self.region,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **self._endpoint_billing(serverless),  # for `snakemake endpoints` (endpoint_registry.listing)
        }
        write_endpoint_state(state_dir, state)
        model = sagemaker_jobs.api_request(
            {
                "model_name": model_name,
                "execution_role_arn": self._role(),
                "primary_container": ContainerDefinition(
                    image=self._image("inference"),
                    model_data_url=model_uri,
                    environment={
                        "SAGEMAKER_PROGRAM": "inference.py",
                        "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
                        "SAGEMAKER_REGION": self.region,
                        **TOOLKIT_SERVING_ENVIRONMENT,
                    },
                ),
            }
        )
        runs_on = (
            {}
            if serverless
            else {
                "initial_instance_count": int(s.get("endpoint_instance_count", 1)),
                "instance_type": s["inference_instance_type"],
            }
        )
        config = sagemaker_jobs.api_request(
            {
                "endpoint_config_name": endpoint_name,
                "production_variants": [
                    ProductionVariant(
                        variant_name="AllTraffic", model_name=model_name, initial_variant_weight=1, **runs_on
                    )
                ],
            }
        )
        if serverless:  # no instances: SageMaker starts the container for requests, and bills their compute time
            # (as the API's keys: the SDK's serializer would name MemorySizeInMB "MemorySizeInMb")
            config["ProductionVariants"][0]["ServerlessConfig"] = {
                "MemorySizeInMB": state["memory_mb"],
                "MaxConcurrency": state["max_concurrency"],
            }
        tags = {"Tags": self._tags()}
        # serverless endpoints take no VPC and no network isolation (AWS's list of what they leave out)
        model_defaults = {} if serverless else self._user_defaults("Model")
        with quota_advice(self.settings, self.region):
            self.client.create_model(**_merged(model_defaults, model | tags))
            self.client.create_endpoint_config(**_merged(self._user_defaults("EndpointConfig"), config | tags))
            self.client.create_endpoint(EndpointName=endpoint_name, EndpointConfigName=endpoint_name, **tags)
        self._wait_for_endpoint(endpoint_name)
        return {
            "backend": self.name,
            "endpoint_name": endpoint_name,
            "url": f"sagemaker://{state['region']}/{endpoint_name}",
            "kind": state["kind"],
            "model": model_uri,
            "started_at": state["started_at"],
        }

    def _endpoint_billing(self, serverless) -> dict:
        """What the endpoint bills by, at the prices configured now (a later config does not reprice it)."""
        s = self.settings
        if serverless:
            return {
                "kind": "serverless",
                "memory_mb": int(s.get("serverless_memory_mb", 3072)),
                "max_concurrency": int(s.get("serverless_max_concurrency", 5)),
                "price_per_gb_second": float(s.get("serverless_price_per_gb_second", 0.00002)),
            }
        return {
            "kind": "instance",
            "instance_type": s["inference_instance_type"],
            "instance_count": int(s.get("endpoint_instance_count", 1)),
            "price_per_hour": (s.get("prices_per_hour") or {}).get(s["inference_instance_type"]),
        }

    def request_limit(self, endpoint) -> int:
        """The most bytes a request to the endpoint may have: 4 MB serverless, 6 MB (6,291,456 B) on instances."""
        serverless = (
            endpoint["kind"] == "serverless" if "kind" in endpoint else run_plan.serverless_endpoint(self.settings)
        )
        return run_plan.SERVERLESS_MAX_REQUEST_BYTES if serverless else INSTANCE_MAX_REQUEST_BYTES

    def _wait_for_endpoint(self, endpoint_name):
        while True:
            status = self.client.describe_endpoint(EndpointName=endpoint_name)
            if status["EndpointStatus"] == "InService":
                return
            if status["EndpointStatus"] not in ("Creating", "Updating"):
                raise JobFailed(
                    f"endpoint {endpoint_name} is {status['EndpointStatus']}: {status.get('FailureReason', '')}"
                )
            self._pause()

    def _upload_model(self, model_tar, model_name):
        uri = store.join(self.settings["output_s3_uri"], "models", model_name, "model.tar.gz")
        if uri.startswith("file://"):  # local mode serves from a folder
            store.local_path(uri).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(model_tar, store.local_path(uri))
            return uri
        return store.S3Store().upload_object(model_tar, uri)

    def healthy(self, endpoint) -> bool:
        return self._endpoint_status(endpoint["endpoint_name"]) == "InService"

    def invoke(self, endpoint, body: bytes, content_type: str, accept=contract.JSON) -> bytes:
        import botocore.exceptions

        runtime = self.runtime
        try:
            response = runtime.invoke_endpoint(
                EndpointName=endpoint["endpoint_name"], Body=body, ContentType=content_type, Accept=accept
            )
        except runtime.exceptions.ValidationError as error:  # e.g. a body over the endpoint's limit (request_limit)
            if "not found" in str(error):  # deleted (teardown, the console) while a client still used it
                raise EndpointGone(
                    f"endpoint {endpoint['endpoint_name']} no longer exists: run the same command again, which "
                    f"brings it back"
                ) from None
            raise EndpointRefused(
                f"endpoint {endpoint['endpoint_name']} refused a request of {len(body):,} bytes "
                f"({content_type}): {error.response['Error'].get('Message', error)}; the endpoint takes at most "
                f"{self.request_limit(endpoint):,} bytes per request (evaluation.max_request_bytes)"
            ) from None
        except runtime.exceptions.ModelError as error:  # inference.py answered an error
            raise EndpointRefused(
                f"endpoint {endpoint['endpoint_name']} answered an error to a request of "
                f"{len(body):,} bytes ({content_type}): {error}"
            ) from None
        except botocore.exceptions.ClientError as error:
            if error.response["Error"].get("Code") not in BUSY_ERROR_CODES:
                raise
            raise EndpointUnavailable(f"endpoint {endpoint['endpoint_name']}: {error}") from None
        except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as error:
            raise EndpointUnavailable(f"endpoint {endpoint['endpoint_name']} did not answer: {error}") from None
        return response["Body"].read()

    def teardown(self, state_dir) -> list:
        """Delete the endpoint, its config and its model recorded in state_dir/state.json."""
        state = read_endpoint_state(state_dir)
        if state is None:
            return []
        # where it was deployed: in another region "Could not find" would read as already gone while it bills
        client = self._client_in(state.get("region"))
        deleted = []
        for call, key, argument in (
            (client.delete_endpoint, "endpoint_name", "EndpointName"),
            (client.delete_endpoint_config, "endpoint_config_name", "EndpointConfigName"),
            (client.delete_model, "model_name", "ModelName"),
        ):
            try:
                call(**{argument: state[key]})
                deleted.append(f"{argument[:-4].lower()} {state[key]}")
            except Exception as error:  # already gone is fine; anything else is not
                if not any(text in str(error) for text in ("Could not find", "does not exist", "not found")):
                    raise
        # Deletion is asynchronous: a redeploy under the same name must wait until the old one is gone.
        while self._endpoint_status(state["endpoint_name"], client) in ("InService", "Deleting"):
            self._pause()
        forget_endpoint_state(state_dir)
        return deleted

    def _client_in(self, region):
        """The SageMaker client of `region` (this session's when None)."""
        return self._client("sagemaker", region)

    def _endpoint_status(self, endpoint_name, client=None):
        try:
            return (client or self.client).describe_endpoint(EndpointName=endpoint_name)["EndpointStatus"]
        except Exception:
            return None


class JobLogLines:
    """A training job's CloudWatch log lines, each printed once, from every stream of its instances (sagemaker-core's
    own log reader takes its client from the default boto3 session, not the backend's region). Best effort: a
    read that fails says why once, and the job is followed by its status alone."""

    def __init__(self, logs_client, job_name):
        self.logs, self.job_name, self.tokens, self.failed = logs_client, job_name, {}, False

    def print_new(self):
        if self.failed:
            return
        try:
            self._print_new()
        except self.logs.exceptions.ResourceNotFoundException:  # nothing logged yet in this account and region
            pass
        except Exception as error:  # denied, throttled past botocore's retries, unreachable
            self.failed = True
            say(f"the log lines of {self.job_name} cannot be read ({error}): its status only from here")

    def _print_new(self):
        found = self.logs.describe_log_streams(logGroupName=TRAINING_LOG_GROUP, logStreamNamePrefix=f"{self.job_name}/")
        for stream in sorted(s["logStreamName"] for s in found["logStreams"]):
            while True:
                token = self.tokens.get(stream)
                page = self.logs.get_log_events(
                    logGroupName=TRAINING_LOG_GROUP,
                    logStreamName=stream,
                    startFromHead=True,
                    **({"nextToken": token} if token else {}),
                )
                self.tokens[stream] = page["nextForwardToken"]
                if not page["events"]:
                    break
                for event in page["events"]:
                    print(event["message"], flush=True)


class TrialCheckpoints:
    """A tuning job's ended trials whose checkpoint folders are removed (done), and whether the store denied it."""

    def __init__(self):
        self.done, self.denied = set(), False


def checkpoint_uri(settings, job_name) -> str:
    """A job's own checkpoint prefix, ending in "/": SageMaker copies everything under it into the
    container, and a prefix without the slash would also match its siblings (job-1, job-10 …)."""
    base = settings.get("checkpoint_s3_uri") or store.join(settings["output_s3_uri"], "checkpoints")
    return store.join(base, job_name) + "/"


@contextlib.contextmanager
def quota_advice(settings, region):
    """SageMaker's ResourceLimitExceeded (new accounts often have a quota of 0 for GPU and spot training,
    and for endpoint instances) as one error saying which quota to raise and how."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ResourceLimitExceeded":
            raise
        message = error.response["Error"].get("Message", str(error))
        quota = re.search(r"service limit '([^']+)'", message)
        quota = quota.group(1) if quota else "the instance type's quota"
        raise JobFailed(
            f"SageMaker refused the request: {message.rstrip('.')}. Request an increase of '{quota}' in the Service "
            f"Quotas console (AWS services → Amazon SageMaker, region {region}), "
            f"or `aws service-quotas list-service-quotas --service-code sagemaker` for its quota code, then "
            f"`aws service-quotas request-service-quota-increase --service-code sagemaker --quota-code <code> "
            f"--desired-value 1`; meanwhile choose an instance type you have quota for"
            f"{' or use_spot: false' if settings.get('use_spot') else ''} in backends.sagemaker"
        ) from None


def _merged(defaults: dict, request: dict) -> dict:
    """request over defaults, key by key into nested structures; the request wins wherever both set a value."""
    merged = dict(defaults)
    for key, value in request.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merged(merged[key], value) if both else value
    return merged


def _denied(error) -> bool:
    """A ClientError that means "not allowed" (SageMaker's AccessDeniedException, S3's AccessDenied)."""
    return getattr(error, "response", {}).get("Error", {}).get("Code", "").startswith("AccessDenied")


def _not_found(error) -> bool:
    """A ClientError that means "no such resource" (SageMaker: ResourceNotFound, "Requested resource not
    found"; moto: "Could not find"), as opposed to throttling, AccessDenied and the like."""
    message = str(error).lower()
    return (
        error.response.get("Error", {}).get("Code") == "ResourceNotFound"
        or "not found" in message
        or "could not find" in message
    )
