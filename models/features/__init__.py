"""Transaction features, shared by offline training and the online stream.

Offline: :func:`build_features` over a transaction table. Online (the stream):
:class:`CardState`, :func:`card_features`, :func:`terminal_features`,
:func:`tx_features`, :func:`assemble_vector`. Standardization: :class:`FeatureTransform`.
Definitions: :mod:`models.features.definitions`.
"""

from models.features.definitions import (
    CARD_FEATURE_NAMES,
    DAY_SECONDS,
    FEATURE_NAMES,
    HANDBOOK_FEATURE_NAMES,
    LABEL_DELAY_DAYS,
    TERMINAL_FEATURE_NAMES,
    FeatureSchema,
)
from models.features.offline import FeatureFrame, build_features, epoch_seconds
from models.features.online import (
    CardState,
    assemble_vector,
    card_features,
    day_index,
    features_for_transaction,
    free_feature_values,
    terminal_features,
    terminal_window_days,
    tx_features,
)
from models.features.transform import DEFAULT_LOG_FEATURES, FeatureTransform

__all__ = [
    "CARD_FEATURE_NAMES",
    "DAY_SECONDS",
    "DEFAULT_LOG_FEATURES",
    "FEATURE_NAMES",
    "HANDBOOK_FEATURE_NAMES",
    "LABEL_DELAY_DAYS",
    "TERMINAL_FEATURE_NAMES",
    "CardState",
    "FeatureFrame",
    "FeatureSchema",
    "FeatureTransform",
    "assemble_vector",
    "build_features",
    "card_features",
    "day_index",
    "epoch_seconds",
    "features_for_transaction",
    "free_feature_values",
    "terminal_features",
    "terminal_window_days",
    "tx_features",
]
