"""Which installed distributions claim ratchet's names: the `ratchet` import package and
the `ratchet` command.

The distribution is `ratchet-loop`: on the package index, `ratchet` is an unrelated
2013 library (Ratchet.io's client, import name `ratchet`), and `ratchet-ci` also
installs a `ratchet` package and command. Either one installed next to ratchet-loop
overwrites its files or its command; `ratchet doctor` names them.
"""

from __future__ import annotations

import re
from importlib import metadata

DISTRIBUTION = "ratchet-loop"
NAME = "ratchet"  # the import package and the command


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _top_level(dist: metadata.Distribution) -> set[str]:
    names = set((dist.read_text("top_level.txt") or "").split())
    for file in dist.files or []:
        parts = file.parts
        if len(parts) > 1 and not parts[0].endswith((".dist-info", ".egg-info", ".data")):
            names.add(parts[0])
        elif len(parts) == 1 and parts[0].endswith(".py"):
            names.add(parts[0].removesuffix(".py"))
    return names


def name_clashes(path: list[str] | None = None) -> list[str]:
    """One sentence per other installed distribution that provides the `ratchet` module
    or the `ratchet` command; empty when none does."""
    found: list[str] = []
    dists = metadata.distributions(path=path) if path is not None else metadata.distributions()
    for dist in dists:
        name = dist.metadata["Name"] or "?"
        if _normal(name) == DISTRIBUTION:
            continue
        claims = []
        if NAME in _top_level(dist):
            claims.append(f"the module '{NAME}'")
        scripts = [e for e in dist.entry_points if e.group == "console_scripts" and e.name == NAME]
        if scripts:
            claims.append(f"the command '{NAME}'")
        if claims:
            found.append(
                f"{name} {dist.version} also provides {' and '.join(claims)}; uninstall it "
                f"(pip uninstall {name}) or give ratchet-loop a virtual environment of its own"
            )
    return sorted(set(found))
