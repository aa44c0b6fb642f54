"""Config handling that the schema cannot do by itself."""

import difflib

import job_contract as contract

from dogbreed.training import backbones
from dogbreed.tuning import spec as tuning_spec


class ConfigError(ValueError):
    """A config value the workflow cannot run with; the message names the key, the value and what to do."""


# Keys meant for the command line. Snakemake may hand `--config key=value` over as a string.
COMMAND_LINE_TYPES = {
    "backend": str,
    "data_source": str,
    "data_sha256": str,
    "results_dir": str,
    "min_accuracy": float,
    "confirm_cloud": bool,
}


def _to_bool(key, value):
    try:
        return contract.to_bool(value)  # the jobs' own reading of a boolean
    except Exception as error:  # argparse's ArgumentTypeError: the words the jobs would refuse
        raise ConfigError(f"config key {key}: {error}") from None


def coerce_command_line(config: dict) -> dict:
    """'true' → True, '0.7' → 0.7, 'null'/'' → None for min_accuracy; in place, before validation."""
    for key, kind in COMMAND_LINE_TYPES.items():
        value = config.get(key)
        if value is None:
            continue
        if kind is bool:
            config[key] = _to_bool(key, value)
        elif kind is float:
            if isinstance(value, str) and value.strip().lower() in ("", "null", "none"):
                config[key] = None
            else:
                try:
                    config[key] = float(value)
                except ValueError:
                    raise ConfigError(f"config key {key}: {value!r} is not a number") from None
        else:
            config[key] = str(value)
    return config


def _key(path) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


def _suggest(name, known) -> str:
    """ "did you mean …" for a misspelt key (the closest known one), else the keys known there."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"did you mean {close[0]}?" if close else f"known here: {', '.join(known)}"


def check_config(config: dict, schema_path) -> dict:
    """The schema's verdict as one line per problem, naming the key (Snakemake's validate prints
    the schema's internals), then what a schema cannot say: a tuning spec that can run (tuning/spec.py), a
    backbone torchvision has at an image size it takes (training/backbones.py)."""
    import jsonschema
    import yaml

    with open(schema_path) as handle:
        schema = yaml.safe_load(handle)
    problems = []
    for error in sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.path)):
        key = _key(error.path)
        if error.validator == "additionalProperties":
            known = sorted(error.schema.get("properties", {}))
            unknown = sorted(set(error.instance) - set(known))
            problems += [
                f"{_key([*error.path, name])} is not a known setting; {_suggest(name, known)}" for name in unknown
            ]
        elif key == "tracking.uri" and error.validator == "not":
            problems.append(
                "tracking.uri: a server's user name or password does not go in the URI (it is printed, recorded "
                "and passed to jobs): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN"
            )
        elif key == "tracking.uri" and error.validator == "pattern":
            problems.append(
                f"tracking.uri: {error.instance!r} is not a tracking store mlflow-skinny writes to (it refuses the "
                f"./mlruns file store): use sqlite:///mlflow.db, a server's http(s):// URL or a SageMaker MLflow ARN"
            )
        else:
            problems.append(f"{key}: {error.message}")
    if not problems:
        known = schema["$defs"]["hyperparameters"]["properties"]  # the names train.py takes
        problems = tuning_spec.parameter_problems(config.get("tuning", {}), known)
        model = {  # the schema's defaults where the config sets none (they are filled in after this check)
            key: config.get("model", {}).get(key, value.get("default"))
            for key, value in schema["properties"]["model"]["properties"].items()
        }
        problems += backbones.arch_problems(model["arch"], model["image_size"])  # a name, a size: torchvision's
    if problems:
        raise ConfigError("\n".join(f"config: {problem}" for problem in problems))  # one line each
    return config
