"""Backends by config name: local (Python only), local_container (SageMaker local mode), sagemaker."""
from dogbreed.backends.base import Backend, EndpointGone, EndpointRefused, JobFailed


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


__all__ = ["Backend", "EndpointGone", "EndpointRefused", "JobFailed", "get_backend"]
