"""Personal data: encryption at rest (Fernet / MultiFernet), blind indexes for look-ups,
pseudonyms for analytics exports, key rotation, and the catalog of every column's classification
(docs/security.md).

    SENSORIUM_PII_KEYS=$(sensorium pii keygen) sensorium up
"""

from __future__ import annotations

from sensorium.pii.fields import (
    PII,
    PUBLIC,
    Classification,
    EncryptedJSON,
    EncryptedText,
    classification_of,
)
from sensorium.pii.keys import (
    ENV,
    KeyRing,
    PIIKeyInvalid,
    PIIKeyMissing,
    configure,
    generate_key,
    require,
    ring,
)

__all__ = [
    "ENV",
    "PII",
    "PUBLIC",
    "Classification",
    "EncryptedJSON",
    "EncryptedText",
    "KeyRing",
    "PIIKeyInvalid",
    "PIIKeyMissing",
    "classification_of",
    "configure",
    "generate_key",
    "require",
    "ring",
]
