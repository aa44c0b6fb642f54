"""The tuning spec (spec.py) as SageMaker's CreateHyperParameterTuningJob request, and its trials' values back in the
spec's types.

The SageMaker backend runs the tuning job (attaching to a running one, warm-starting from finished ones) and
reads its trials; what the spec means to SageMaker's API is here, beside the Optuna translation. The request is
built from sagemaker-core's shapes (SDK v3): v3's HyperparameterTuner takes a ModelTrainer, uploads the code to the
account's default bucket outside the store's prefix, and drops a seed of 0 (docs/architecture.md §7).
"""

import json

from dogbreed.tuning import spec as tuning_spec


def parameter_ranges(spec: dict):
    """The spec's parameters as the API's ParameterRanges. Categorical values go JSON-encoded, as every
    hyperparameter of a job under the training toolkit does (its trials' values come back so: typed_value)."""
    from sagemaker.core.shapes import (
        CategoricalParameterRange,
        ContinuousParameterRange,
        IntegerParameterRange,
        ParameterRanges,
    )

    ranges = {"continuous": [], "integer": [], "categorical": []}
    for name, p in spec["parameters"].items():
        if p["type"] == "categorical":
            ranges["categorical"].append(
                CategoricalParameterRange(name=name, values=[json.dumps(str(v)) for v in p["values"]])
            )
            continue
        shape = ContinuousParameterRange if p["type"] == "continuous" else IntegerParameterRange
        ranges[p["type"]].append(
            shape(name=name, min_value=str(p["min"]), max_value=str(p["max"]), scaling_type=p.get("scaling", "Auto"))
        )
    return ParameterRanges(
        continuous_parameter_ranges=ranges["continuous"],
        integer_parameter_ranges=ranges["integer"],
        categorical_parameter_ranges=ranges["categorical"],
    )


def api_tuning_limits(spec, finished_trials) -> tuple:
    """(MaxNumberOfTrainingJobs, TrainingJobEarlyStoppingType) as the API accepts them for the spec.
    Hyperband stops trials itself: the API requires early stopping Off with it. Grid runs every
    combination of its categorical values: the job count is theirs (the API refuses any other)."""
    early_stopping = "Off" if spec["strategy"] == "Hyperband" else spec.get("early_stopping", "Off")
    return tuning_spec.max_trials(spec) - (0 if spec["strategy"] == "Grid" else finished_trials), early_stopping


def tuning_job_request(spec, job_name, training_definition, finished_trials, warm_start_from=(), tags=()) -> dict:
    """The CreateHyperParameterTuningJob request for the spec's trials not yet run, as the API takes it;
    training_definition: its trials' TrainingJobDefinition (the API's); warm_start_from: the names of finished tuning
    jobs of the same search (their trials count, and teach the new job)."""
    from sagemaker.core.shapes import (
        HyperParameterTuningJobConfig,
        HyperParameterTuningJobObjective,
        HyperParameterTuningJobWarmStartConfig,
        ParentHyperParameterTuningJob,
        ResourceLimits,
    )

    from dogbreed.backends.sagemaker_jobs import api_request

    new_trials, early_stopping = api_tuning_limits(spec, finished_trials)
    config = HyperParameterTuningJobConfig(
        strategy=spec["strategy"],
        resource_limits=ResourceLimits(
            max_number_of_training_jobs=new_trials,
            max_parallel_training_jobs=min(spec["max_parallel_jobs"], new_trials),  # a warm start may leave fewer
        ),
        training_job_early_stopping_type=early_stopping,
        hyper_parameter_tuning_job_objective=HyperParameterTuningJobObjective(
            type=spec["objective"]["type"], metric_name=spec["objective"]["metric"]
        ),
        parameter_ranges=parameter_ranges(spec),
    )
    request = {"hyper_parameter_tuning_job_name": job_name, "hyper_parameter_tuning_job_config": config}
    if warm_start_from:
        request["warm_start_config"] = HyperParameterTuningJobWarmStartConfig(
            parent_hyper_parameter_tuning_jobs=[
                ParentHyperParameterTuningJob(hyper_parameter_tuning_job_name=n) for n in sorted(warm_start_from)
            ],
            warm_start_type="IdenticalDataAndAlgorithm",
        )
    request = api_request(request)
    if spec.get("seed") is not None:  # after serializing: the SDK's serializer would leave a seed of 0 out
        request["HyperParameterTuningJobConfig"]["RandomSeed"] = spec["seed"]
    request["TrainingJobDefinition"] = training_definition
    if tags:
        request["Tags"] = list(tags)
    return request


def warm_start_parents(tuning_jobs, objective_type, limit=5) -> set:
    """The names of the `limit` completed tuning jobs with the best objective (the API takes at most 5
    parents); jobs without a best training job come last."""

    def best(job):
        value = job.get("BestTrainingJob", {}).get("FinalHyperParameterTuningJobObjectiveMetric", {}).get("Value")
        if value is None:
            return float("inf")
        return -value if objective_type == "Maximize" else value

    return {job["HyperParameterTuningJobName"] for job in sorted(tuning_jobs, key=best)[:limit]}


def typed_value(parameter, value):
    """SageMaker returns tuned values as strings (categorical ones JSON-quoted): back to the spec's types."""
    if value is None:
        return None
    text = str(value).strip('"')
    if parameter["type"] == "continuous":
        return float(text)
    if parameter["type"] == "integer":
        return int(float(text))
    return next((v for v in parameter["values"] if str(v) == text), text)


def best_of(rows, spec) -> dict:
    """The best completed trial of the tuning jobs' rows, as the local tuner's best_trial says it; None when
    none completed."""
    objective = spec["objective"]["metric"]
    completed = [r for r in rows if r[objective] is not None]
    if not completed:
        return None
    pick = max if spec["objective"]["type"] == "Maximize" else min
    best = pick(completed, key=lambda r: r[objective])
    return {
        "hyperparameters": {n: best[n] for n in spec["parameters"]},
        "trial": best["trial"],
        "job_name": best["job_name"],
        "trials_completed": len(completed),
        "objective": {"metric": objective, "type": spec["objective"]["type"], "value": best[objective]},
    }
