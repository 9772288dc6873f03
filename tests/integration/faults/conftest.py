"""The fault suite (``pytest -m faults``; ``make test-faults``).

It lives under ``tests/integration`` so it shares that suite's session services and
factories (one broker and one Valkey per session). A test that stops or restarts a
service never touches the session's: it asks for ``private_kafka`` / ``private_valkey``.
"""

from pipeline_helpers import tiny_model_fixture  # noqa: F401 - the tiny_model fixture
