"""Config handling that the schema cannot do by itself."""

# Keys meant for the command line. Snakemake may hand `--config key=value` over as a string.
COMMAND_LINE_TYPES = {"backend": str, "data_source": str, "data_sha256": str, "results_dir": str,
                      "min_accuracy": float, "confirm_cloud": bool}


def _to_bool(key, value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise ValueError(f"config key {key}: {value!r} is not true or false")


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
                    raise ValueError(f"config key {key}: {value!r} is not a number") from None
        else:
            config[key] = str(value)
    return config
