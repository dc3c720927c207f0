"""docs/spec.md is the spec's reference: every key of every section has a row in it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from pydantic import BaseModel

from ratchet.spec import Spec

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "spec.md"


def _sections(text: str) -> dict[str, str]:
    """`## \\`[name]\\`...` heading -> the text up to the next `## ` heading."""
    parts = re.split(r"^## ", text, flags=re.MULTILINE)
    found = {}
    for part in parts[1:]:
        match = re.match(r"`\[([a-z_.]+)\]`", part)
        if match:
            found[match.group(1)] = part
    return found


def _sections_of(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Each section's model, also an optional one (`SuiteSpec | None`)."""
    found = {}
    for name, field in model.model_fields.items():
        for kind in (field.annotation, *get_args(field.annotation)):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                found[name] = kind
    return found


def test_every_spec_key_is_in_the_reference() -> None:
    sections = _sections(REFERENCE.read_text())
    missing = []
    for section, model in _sections_of(Spec).items():
        if section not in sections:
            missing.append(f"[{section}] (no '## `[{section}]`' heading)")
            continue
        for key in model.model_fields:
            if f"| `{key}` |" not in sections[section]:
                missing.append(f"[{section}] {key}")
    assert not missing, f"keys missing from docs/spec.md: {', '.join(missing)}"


def test_the_reference_names_no_key_the_model_lacks() -> None:
    sections = _sections(REFERENCE.read_text())
    models = _sections_of(Spec)
    extra = []
    for section, text in sections.items():
        if section not in models:
            continue
        rows = re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE)
        extra += [f"[{section}] {key}" for key in rows if key not in models[section].model_fields]
    assert not extra, f"docs/spec.md documents keys the spec does not have: {', '.join(extra)}"


def test_the_spec_and_the_policy_agree_on_the_default_looks() -> None:
    """The spec model does not import the policy (start-up time), so the default lives twice."""
    from ratchet.policy import NoiseAware
    from ratchet.specmodel import PolicySpec

    assert PolicySpec().max_repeats == NoiseAware().max_measurements
    assert f"| `max_repeats` | `{PolicySpec().max_repeats}` |" in REFERENCE.read_text()
