"""The scorer runtime: which model scores the next micro-batch.

A worker holds exactly one current scorer. :meth:`ScorerRuntime.swap` (called by the
model-updates agent, issue 5) only *stages* a new one; the score pipeline takes the
scorer once per micro-batch with :meth:`ScorerRuntime.for_batch`, which is where a staged
scorer becomes current. So an in-flight batch always finishes on the model it started
with, and every score record carries that model's ``version``.

Examples
--------
>>> class Fixed:
...     def __init__(self, version): self.version = version
>>> rt = ScorerRuntime(Fixed("v1"))
>>> rt.for_batch().version
'v1'
>>> rt.swap(Fixed("v2")); rt.version  # staged, not live until the next batch
'v1'
>>> rt.for_batch().version, rt.version, rt.swaps
('v2', 'v2', 1)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger(__name__)


class ScorerLike(Protocol):
    """What the pipeline needs from a scorer (``models.scorer.Scorer`` is one)."""

    @property
    def version(self) -> str: ...


S = TypeVar("S", bound=ScorerLike)


class ScorerRuntime(Generic[S]):
    """Holds the current scorer; swaps atomically between micro-batches.

    Parameters
    ----------
    scorer
        The scorer to start with.
    on_live
        Called with the new scorer when a staged one goes live (e.g. to update the
        ``riskstream_model`` info metric); its errors are logged, never raised.
    """

    def __init__(self, scorer: S, on_live: Callable[[S], Any] | None = None) -> None:
        self._current: S = scorer
        self._staged: S | None = None
        self._staged_at = 0.0
        self._lock = threading.Lock()  # swap() may come from another thread
        self._on_live = on_live
        self.swaps = 0
        self.live_since = time.time()
        self._notify(scorer)

    @property
    def current(self) -> S:
        """The scorer the most recent batch used (a staged one is not live yet)."""
        return self._current

    @property
    def version(self) -> str:
        """Version of :attr:`current`."""
        return self._current.version

    @property
    def staged(self) -> S | None:
        """A scorer waiting for the next batch boundary, if any."""
        return self._staged

    def swap(self, scorer: S) -> None:
        """Stage ``scorer``; it goes live at the start of the next micro-batch.

        Staging twice before a batch keeps only the newest.
        """
        with self._lock:
            self._staged = scorer
            self._staged_at = time.time()

    def for_batch(self) -> S:
        """The scorer for the micro-batch about to start (promotes a staged one)."""
        if self._staged is not None:
            with self._lock:
                staged, self._staged = self._staged, None
            if staged is not None:
                old = self._current.version
                self._current = staged
                self.swaps += 1
                self.live_since = time.time()
                log.info("model %s is live (was %s)", staged.version, old)
                self._notify(staged)
        return self._current

    def _notify(self, scorer: S) -> None:
        if self._on_live is None:
            return
        try:
            self._on_live(scorer)
        except Exception:  # a metrics hiccup must never stop scoring
            log.exception("on_live callback failed for model %s", scorer.version)


DEFAULT_ARTIFACT_DIR = "artifacts/default"


def load_scorer(settings: Any) -> Any:
    """The scorer a worker starts with: ``settings.model_path`` or ``artifacts/default``.

    Raises
    ------
    RiskstreamError
        No artifact there, or it cannot be loaded (the message says which).
    """
    from pathlib import Path

    from models.artifacts import ArtifactError
    from models.scorer import Scorer
    from streams.errors import RiskstreamError

    path = Path(settings.model_path) if settings.model_path else Path(DEFAULT_ARTIFACT_DIR)
    if not path.is_dir():
        raise RiskstreamError(
            f"no model artifact at {path}: train one with `riskstream train` "
            "or set RISKSTREAM_MODEL_PATH"
        )
    try:
        return Scorer.from_artifact(path, top_k=settings.explain_top_k)
    except (ArtifactError, OSError, ValueError) as exc:
        raise RiskstreamError(f"cannot load the model artifact at {path}: {exc}") from None
