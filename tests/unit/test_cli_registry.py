"""``riskstream model list`` without Redis: one readable line, fast (no model code loaded)."""

from __future__ import annotations

import subprocess
import sys

from streams.services.process import free_port

CHECK = """
import sys
from streams.cli import main
try:
    main(["model", "list"])
except SystemExit as exc:
    print("exit", exc.code, "torch loaded" if "torch" in sys.modules else "torch not loaded")
"""


def test_model_list_without_redis_is_one_line_before_loading_torch() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    done = subprocess.run(
        [sys.executable, "-c", CHECK],
        env={"RISKSTREAM_REDIS_URL": url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: Redis is not reachable")
    assert done.stdout.strip() == "exit 1 torch not loaded"
