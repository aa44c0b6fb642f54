"""The tuning spec (spec.py) as SageMaker's HyperparameterTuner, and its trials' values back in the spec's types.

The SageMaker backend runs the tuning job (attaching to a running one, warm-starting from finished ones) and
reads its trials; what the spec means to SageMaker's API is here, beside the Optuna translation.
"""

from dogbreed.tuning import spec as tuning_spec


def parameter_ranges(spec: dict) -> dict:
    """{name: the SDK's ContinuousParameter | IntegerParameter | CategoricalParameter} for the spec's parameters."""
    from sagemaker.tuner import CategoricalParameter, ContinuousParameter, IntegerParameter

    ranges = {}
    for name, p in spec["parameters"].items():
        scaling = p.get("scaling", "Auto")
        if p["type"] == "continuous":
            ranges[name] = ContinuousParameter(p["min"], p["max"], scaling_type=scaling)
        elif p["type"] == "integer":
            ranges[name] = IntegerParameter(p["min"], p["max"], scaling_type=scaling)
        else:
            ranges[name] = CategoricalParameter(list(p["values"]))
    return ranges


def api_tuning_limits(spec, finished_trials) -> tuple:
    """(MaxNumberOfTrainingJobs, TrainingJobEarlyStoppingType) as the API accepts them for the spec.
    Hyperband stops trials itself: the API requires early stopping Off with it. Grid runs every
    combination of its categorical values: the job count is theirs (the API refuses any other)."""
    early_stopping = "Off" if spec["strategy"] == "Hyperband" else spec.get("early_stopping", "Off")
    return tuning_spec.max_trials(spec) - (0 if spec["strategy"] == "Grid" else finished_trials), early_stopping


def hyperparameter_tuner(spec, estimator, metric_definitions, finished_trials, warm_start_from=(), tags=None):
    """The SDK's HyperparameterTuner for the spec's trials not yet run; warm_start_from: the names of finished
    tuning jobs of the same search (their trials count, and teach the new job)."""
    from sagemaker.tuner import HyperparameterTuner, WarmStartConfig, WarmStartTypes

    new_trials, early_stopping = api_tuning_limits(spec, finished_trials)
    warm_start = (
        WarmStartConfig(WarmStartTypes.IDENTICAL_DATA_AND_ALGORITHM, parents=set(warm_start_from))
        if warm_start_from
        else None
    )
    return HyperparameterTuner(
        estimator,
        spec["objective"]["metric"],
        parameter_ranges(spec),
        metric_definitions=metric_definitions,
        strategy=spec["strategy"],
        objective_type=spec["objective"]["type"],
        max_jobs=new_trials,
        max_parallel_jobs=min(spec["max_parallel_jobs"], new_trials),  # a warm start may leave fewer trials
        early_stopping_type=early_stopping,
        tags=tags,
        random_seed=spec.get("seed"),
        warm_start_config=warm_start,
    )


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
