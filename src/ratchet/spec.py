"""The spec: `ratchet.toml` (or `[tool.ratchet]` in `pyproject.toml`) read and checked.

Every problem with a spec becomes a `SpecError` whose message is one line naming the
key or file at fault; the CLI prints it and exits 2. The typed model itself (its
sections, defaults and values) is `specmodel`'s; its names are imported here too, where
most code looks for them.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from wcmatch import glob

from ratchet.environment import SECRET_MARKERS as SECRET_MARKERS
from ratchet.errors import UsageError
from ratchet.specmodel import AGENT_CLIS as AGENT_CLIS
from ratchet.specmodel import DEFAULT_RUN_NAME as DEFAULT_RUN_NAME
from ratchet.specmodel import GLOB_FLAGS as GLOB_FLAGS
from ratchet.specmodel import KEY_VARIABLES as KEY_VARIABLES
from ratchet.specmodel import SUITE_COMMAND as SUITE_COMMAND
from ratchet.specmodel import SUITE_METRICS as SUITE_METRICS
from ratchet.specmodel import Duration as Duration
from ratchet.specmodel import ExecutorSpec as ExecutorSpec
from ratchet.specmodel import MetricSpec as MetricSpec
from ratchet.specmodel import PolicySpec as PolicySpec
from ratchet.specmodel import ProposerSpec as ProposerSpec
from ratchet.specmodel import RunSpec as RunSpec
from ratchet.specmodel import SandboxSpec as SandboxSpec
from ratchet.specmodel import ScopeSpec as ScopeSpec
from ratchet.specmodel import Size as Size
from ratchet.specmodel import Spec as Spec
from ratchet.specmodel import SuiteSpec as SuiteSpec
from ratchet.specmodel import matches as matches
from ratchet.specmodel import matching as matching
from ratchet.specmodel import parse_duration as parse_duration
from ratchet.specmodel import parse_size as parse_size

SPEC_FILE = "ratchet.toml"
PYPROJECT = "pyproject.toml"


class SpecError(UsageError):
    """A spec problem, stated in one line."""


def _describe(error: ErrorDetails, source: str) -> str:
    loc = [str(part) for part in error["loc"] if not str(part).startswith("function-")]
    section = f"[{loc[0]}]" if loc else ""
    key = ".".join(loc[1:])
    where = f"{source}: {section} {key}".rstrip() if section else source
    kind = error["type"]
    if kind == "extra_forbidden":
        section = f"[{'.'.join(loc[:-1])}]" if len(loc) > 1 else "top level"
        return f"{source}: unknown key '{loc[-1]}' in {section}"
    if kind == "missing":
        if len(loc) == 1:
            return f"{source}: section {section} is missing"
        return f"{where}: required key is missing"
    if kind == "too_short" and key == "editable":
        return f"{where}: the scope is empty; name at least one editable file"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "value_error" and ": " in message and not key:
        # validators name their own key: "pattern: ..."
        return f"{where} {message}"
    got = error.get("input")
    suffix = f" (got {got!r})" if kind != "value_error" and not isinstance(got, dict) else ""
    return f"{where}: {message}{suffix}"


def parse_spec(data: dict[str, Any], source: str) -> Spec:
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_describe(exc.errors()[0], source)) from None


def load_spec(project: Path, files: list[str] | None = None) -> Spec:
    """Read and validate the spec of the project at `project`.

    With `files` (the project's paths, POSIX and relative), also check that the
    files it names exist and that the scope is neither empty nor protected.
    """
    toml_path = project / SPEC_FILE
    pyproject = project / PYPROJECT
    if toml_path.is_file():
        source, data = SPEC_FILE, _read_toml(toml_path)
    elif pyproject.is_file() and "ratchet" in _read_toml(pyproject).get("tool", {}):
        source, data = f"{PYPROJECT} [tool.ratchet]", _read_toml(pyproject)["tool"]["ratchet"]
    else:
        raise SpecError(f"no {SPEC_FILE} in {project}; run 'ratchet init' to write one")
    spec = parse_spec(data, source)
    if files is not None:
        check_files(spec, files, source)
        check_regions(project, spec, files, source)
    return spec


def check_regions(project: Path, spec: Spec, files: list[str], source: str = SPEC_FILE) -> None:
    """Each region-scoped file holds well-formed regions: otherwise every proposal to it
    would be refused, so the run is refused at its start instead."""
    from ratchet.regions import RegionError, find_regions

    for name in files:
        region = spec.scope.region_of(name)
        if region is None:
            continue
        try:
            text = (project / name).read_text(errors="replace")
            found = find_regions(text, *region)
        except (OSError, RegionError) as error:
            raise SpecError(f"{source}: [scope] editable: {name}: {error}") from None
        if not found:
            start, end = region[1]
            raise SpecError(
                f"{source}: [scope] editable: {name} has no {region[0]} region "
                f"(a line {start!r}, later a line {end!r})"
            )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path.name}: not valid TOML ({exc})") from None


def check_files(spec: Spec, files: list[str], source: str = SPEC_FILE) -> None:
    """The files the spec names exist, and the scope is neither empty nor protected."""
    present = set(files)
    editable = matching(files, spec.scope.editable)
    if not editable:
        raise SpecError(
            f"{source}: [scope] editable {spec.scope.editable} matches no file; the scope is empty"
        )
    from ratchet.integrity import expand_patterns

    clash = matching(editable, expand_patterns(spec.scope.protected))
    if clash:
        raise SpecError(f"{source}: [scope] {clash[0]} is both editable and protected")
    if spec.suite is not None and spec.suite.agent_file not in editable:
        raise SpecError(
            f"{source}: [suite] agent: {spec.suite.agent_file!r} is not an editable file; "
            "the harness's entry point must be in [scope] editable"
        )
    named = [("directive", spec.scope.directive)] if spec.scope.directive else []
    named += [("context", c) for c in spec.scope.context if not glob.is_magic(c, flags=GLOB_FLAGS)]
    for key, name in named:
        if name not in present:
            raise SpecError(f"{source}: [scope] {key}: file '{name}' does not exist")
