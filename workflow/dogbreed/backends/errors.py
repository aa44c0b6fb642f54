"""What a backend raises that its callers act on."""


class JobFailed(RuntimeError):
    """A training job ended in failure; the message carries the end of its log."""


class EndpointGone(RuntimeError):
    """An endpoint that should be serving does not answer."""


class EndpointRefused(RuntimeError):
    """An endpoint answered a request with an error; the message says what was sent and what it said."""
