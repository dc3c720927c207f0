"""ratchet: the autoresearch loop as infrastructure.

The public Python API (see docs/api.md); the command line is a thin layer over it:

```
import ratchet
project = ratchet.Project(".")
with project.run("night-1", max_experiments=50) as run:
    for record in run:
        print(record.id, record.decision, record.value, record.why)
```

Names are imported on first use, so `import ratchet` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ratchet.decisions import Category, Decision
    from ratchet.errors import RunError, RunLocked, UsageError
    from ratchet.events import Event, ExperimentDecided, RunStarted, RunStopped, StageStarted
    from ratchet.journalrecords import ExperimentRecord, RunRecord
    from ratchet.judging import NoiseReport
    from ratchet.project import Project, Run, Task
    from ratchet.proposers.base import Cost, Outcome, Proposal, ProposalError

_EXPORTS = {
    "Project": "ratchet.project",
    "Run": "ratchet.project",
    "Task": "ratchet.project",
    "ExperimentRecord": "ratchet.journalrecords",
    "RunRecord": "ratchet.journalrecords",
    "Decision": "ratchet.decisions",
    "Category": "ratchet.decisions",
    "Proposal": "ratchet.proposers.base",
    "Cost": "ratchet.proposers.base",
    "Outcome": "ratchet.proposers.base",
    "ProposalError": "ratchet.proposers.base",
    "NoiseReport": "ratchet.judging",
    "Event": "ratchet.events",
    "RunStarted": "ratchet.events",
    "StageStarted": "ratchet.events",
    "ExperimentDecided": "ratchet.events",
    "RunStopped": "ratchet.events",
    "UsageError": "ratchet.errors",
    "RunError": "ratchet.errors",
    "RunLocked": "ratchet.errors",
}
__all__ = [
    "Category",
    "Cost",
    "Decision",
    "Event",
    "ExperimentDecided",
    "ExperimentRecord",
    "NoiseReport",
    "Outcome",
    "Project",
    "Proposal",
    "ProposalError",
    "Run",
    "RunError",
    "RunLocked",
    "RunRecord",
    "RunStarted",
    "RunStopped",
    "StageStarted",
    "Task",
    "UsageError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ratchet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next look-up is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
