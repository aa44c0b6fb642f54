"""The tuning spec (config `tuning:`), in a SageMaker tuning job's shape:

  objective: {metric, regex, type: Maximize|Minimize}
  strategy: Bayesian | Random | Grid | Hyperband
  early_stopping: Off | Auto
  max_jobs, max_parallel_jobs, seed
  parameters: {name: {type: continuous|integer|categorical, min, max, scaling, values}}

The schema checks each key's type; this module checks what a schema cannot say, once, for both translators
(optuna_study.py, sagemaker_tuner.py): the Snakefile refuses a run whose spec has problems before any rule runs,
and each translator refuses one again when it is called directly.
"""

import math


class TuningError(ValueError):
    """A tuning spec that cannot run; the message names the key and what to do."""


def problems(tuning: dict, hyperparameters, backend: str = "local") -> list:
    """Every problem of the spec, one line each, naming the key. hyperparameters: the names train.py takes (None:
    not checked). backend: the tuner that will run it (SageMaker's, or the project's Optuna study on the others)."""
    return parameter_problems(tuning, hyperparameters) or search_problems(tuning, backend)


def parameter_problems(tuning: dict, hyperparameters) -> list:
    """Each parameter on its own: a train.py hyperparameter with a range both tuners accept. (The config check, which
    every target runs, teardown included, asks only this: a spec is the tuning's to refuse, not the endpoint's.)"""
    found = []
    for name, parameter in tuning.get("parameters", {}).items():
        found += _parameter_problems(f"tuning.parameters.{name}", name, parameter, hyperparameters)
    return found


def _parameter_problems(key, name, parameter, hyperparameters) -> list:
    found = []
    if hyperparameters is not None and name not in hyperparameters:
        found.append(f"{key}: {name} is not a hyperparameter of train.py; known: {', '.join(sorted(hyperparameters))}")
    if parameter["type"] == "categorical":
        return found + ([] if parameter.get("values") else [f"{key}: a categorical parameter needs values: [...]"])
    low, high = parameter.get("min"), parameter.get("max")
    if low is None or high is None:
        return found + [f"{key}: a {parameter['type']} parameter needs min and max"]
    if parameter["type"] == "integer" and not (float(low).is_integer() and float(high).is_integer()):
        found.append(f"{key}: an integer parameter needs whole min and max, got {low} and {high}")
    if not low < high:
        found.append(f"{key}: min {low} must be below max {high}")
    scaling = parameter.get("scaling", "Auto")
    if scaling in ("Logarithmic", "ReverseLogarithmic") and low <= 0:
        found.append(f"{key}: {scaling} scaling needs min > 0, got {low}")
    return found


def search_problems(tuning: dict, backend: str = "local") -> list:
    """The search as a whole, for the tuner that runs it: scalings it has, Grid's parameters, and max_jobs against
    the combinations there are. (The run plan asks this, with the schema's defaults filled in.)"""
    if backend != "sagemaker":
        reverse = [n for n, p in tuning["parameters"].items() if p.get("scaling") == "ReverseLogarithmic"]
        if reverse:
            return [
                f"tuning.parameters.{name}: ReverseLogarithmic scaling has no Optuna counterpart (the {backend} "
                f"backend's tuner): use Linear or Logarithmic"
                for name in reverse
            ]
    combinations = search_combinations(tuning)
    if tuning["strategy"] == "Grid":
        if combinations is None:
            names = [n for n, p in tuning["parameters"].items() if p["type"] != "categorical"]
            return [
                (
                    f"tuning.strategy Grid needs categorical parameters only (as SageMaker's does); these are not: "
                    f"{', '.join(names)}"
                )
            ]
        return []
    if combinations is not None and combinations < tuning["max_jobs"]:
        return [
            (
                f"tuning.max_jobs is {tuning['max_jobs']}, but tuning.parameters has only {combinations} combination(s) "
                f"of its categorical values (SageMaker refuses that, and the local tuner would repeat them): lower "
                f"max_jobs to {combinations}, or add values or a continuous range"
            )
        ]
    return []


def check(tuning: dict, backend: str = "local", hyperparameters=None):
    """TuningError naming every problem; for a translator called directly (the run plan checked it already)."""
    if found := problems(tuning, hyperparameters, backend):
        raise TuningError("; ".join(found))


def search_combinations(tuning: dict):
    """How many configurations a search of categorical parameters only has; None when any range is continuous."""
    parameters = tuning["parameters"].values()
    if any(p["type"] != "categorical" for p in parameters):
        return None
    return math.prod(len(p["values"]) for p in parameters)


def max_trials(tuning: dict) -> int:
    """The tuning job's trials: Grid runs every combination of its categorical values (SageMaker's API refuses
    any other count), the other strategies max_jobs."""
    return search_combinations(tuning) if tuning["strategy"] == "Grid" else int(tuning["max_jobs"])
