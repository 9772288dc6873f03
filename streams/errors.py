"""Errors that the CLI turns into one readable line instead of a traceback."""


class RiskstreamError(Exception):
    """A failure a user can act on; ``str(err)`` is the one line they see.

    >>> str(RiskstreamError("Kafka is not reachable at localhost:9092"))
    'Kafka is not reachable at localhost:9092'
    """

    exit_code = 1
