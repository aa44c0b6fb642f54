"""Backends by config name: local (Python only), local_container (SageMaker local mode), sagemaker.

Each is imported only when it is configured (code_inputs.py follows only the configured one).
"""

from dogbreed.backends.base import Backend
from dogbreed.training import jobspec


def get_backend(name: str, settings: dict) -> Backend:
    """settings: the config's backends.<name> section."""
    if name == "local":
        from dogbreed.backends.local import LocalBackend

        return LocalBackend(settings or {})
    if name == "sagemaker":
        from dogbreed.backends.sagemaker import SageMakerBackend

        return SageMakerBackend(settings)
    if name == "local_container":
        from dogbreed.backends.local_container import LocalContainerBackend

        return LocalContainerBackend(settings)
    raise ValueError(f"unknown backend {name!r}: local, local_container or sagemaker")


def rule_backend(smk):
    """The backend a rule talks to, from its params. confirm_cloud and the run settings (jobspec.RUN_SETTINGS) come
    from the config itself: permission to spend, and how fast a job starts, are inputs of no result, so they are
    kept out of params (granting permission after a refused run must not rerun what already ran)."""
    section = smk.config.get("backends", {}).get(smk.params.backend) or {}
    return get_backend(
        smk.params.backend,
        {
            **smk.params.backend_settings,
            **{key: section[key] for key in jobspec.RUN_SETTINGS if key in section},
            "confirm_cloud": bool(smk.config.get("confirm_cloud")),
        },
    )
