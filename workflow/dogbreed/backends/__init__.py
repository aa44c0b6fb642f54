"""Backends by config name. `local` is built; `local_container` and `sagemaker` come with the SDK work."""
from dogbreed.backends.base import Backend, EndpointGone, JobFailed


def get_backend(name: str, settings: dict) -> Backend:
    """settings: the config's backends.<name> section."""
    if name == "local":
        from dogbreed.backends.local import LocalBackend
        return LocalBackend(settings or {})
    raise ValueError(f"backend {name!r} is not available yet: only 'local' is built so far "
                     f"(set backend: local in config.yaml or --config backend=local)")


__all__ = ["Backend", "EndpointGone", "JobFailed", "get_backend"]
