"""What a backend raises that its callers act on."""


class JobFailed(RuntimeError):
    """A training job ended in failure; the message carries the end of its log."""


class EndpointGone(RuntimeError):
    """An endpoint that should be serving does not answer."""


class EndpointUnavailable(RuntimeError):
    """The endpoint cannot take a request now but may when it is sent again: the connection refused or reset,
    a 429/502/503/504 from a busy or (re)starting server, SageMaker's throttling or ModelNotReadyException."""


class EndpointRefused(RuntimeError):
    """An endpoint answered a request with an error; the message says what was sent and what it said."""


class JobInterrupted(KeyboardInterrupt):
    """A job stopped because the rule running it was told to stop (a signal, or the study its trial belonged to
    stopped); its checkpoint is kept and the rerun resumes it. A KeyboardInterrupt, as the signal's own."""
