"""What children may see of the environment, and scrubbing secrets from text.

A name containing KEY, TOKEN, SECRET, PASSWORD or CREDENTIAL is a secret. Secrets
never reach a measurement unless the spec allow-lists them, and their values are
replaced by `***` in everything ratchet writes (logs, journal, briefs).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")
MASK = "***"
MIN_SECRET_LENGTH = 6  # shorter values ("1", "yes") would mask ordinary text


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(marker in upper for marker in SECRET_MARKERS)


def child_environment(
    allow: Iterable[str] = (),
    extra: Mapping[str, str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The parent's environment without secrets, except the allow-listed names."""
    allowed = set(allow)
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if k in allowed or not is_secret_name(k)}
    env.update(extra or {})
    return env


class Redactor:
    """Replaces the values of the environment's secrets with `***`."""

    def __init__(self, base: Mapping[str, str] | None = None) -> None:
        source = os.environ if base is None else base
        values = {v for k, v in source.items() if is_secret_name(k) and len(v) >= MIN_SECRET_LENGTH}
        # longest first, so a secret that contains another is masked whole
        self._values = sorted(values, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return text
