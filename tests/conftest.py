"""Test-run wide setup: tests never see a developer's running services.

``riskstream up`` records its Kafka and Valkey in ``.riskstream/services.json``, which the
settings read as defaults. Pointing ``RISKSTREAM_STATE_DIR`` at an empty folder for the
whole run (before anything builds settings) keeps that file out of every test; tests pass
their addresses explicitly (see ``tests/integration/conftest.py``). The shared Kafka jar
cache (``RISKSTREAM_CACHE_DIR``) is left alone so runs reuse it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_STATE_DIR = tempfile.mkdtemp(prefix="riskstream-test-state-")
os.environ["RISKSTREAM_STATE_DIR"] = _STATE_DIR
atexit.register(shutil.rmtree, _STATE_DIR, ignore_errors=True)
