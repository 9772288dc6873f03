"""The worker's agents, each registered on the app by its module's ``register``.

* :mod:`streams.agents.score`: ``transactions`` → ``scores`` / ``alerts`` / DLQ.
* :mod:`streams.agents.labels`: ``labels`` → terminal fraud counts in Redis.
"""
