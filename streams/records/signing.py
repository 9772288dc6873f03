"""What the HMAC of a model update covers, so the publisher and every worker agree.

The signed bytes are the update's JSON without ``signature``, keys sorted, compact. The
key is the ``model_signing_key`` setting.

>>> update = ModelUpdate(version="v2", parent="v1", created_at=1.0, sha256="0" * 64,
...                      signature="", metrics={"ap": 0.7}, location="riskstream:weights:v2")
>>> signed = sign_model_update(update, "k")
>>> verify_model_update(signed, "k"), verify_model_update(signed, "other key")
(True, False)
"""

from __future__ import annotations

import hashlib
import hmac

import orjson

from streams.records.schema import ModelUpdate, build


def signing_payload(update: ModelUpdate) -> bytes:
    """The canonical bytes the signature is computed over."""
    values = update.asdict()
    del values["signature"]
    return orjson.dumps(values, option=orjson.OPT_SORT_KEYS)


def _digest(update: ModelUpdate, key: bytes | str) -> str:
    secret = key.encode() if isinstance(key, str) else key
    return hmac.new(secret, signing_payload(update), hashlib.sha256).hexdigest()


def sign_model_update(update: ModelUpdate, key: bytes | str) -> ModelUpdate:
    """A copy of ``update`` carrying the HMAC-SHA256 (hex) of its other fields."""
    values = update.asdict()
    values["metrics"] = dict(values["metrics"])
    values["signature"] = _digest(update, key)
    return build(ModelUpdate, values)


def verify_model_update(update: ModelUpdate, key: bytes | str) -> bool:
    """Whether ``update.signature`` is right for ``key`` (constant-time comparison)."""
    given = update.signature.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(given, _digest(update, key).encode())
