"""Supervisor actors applying the pure OTP policy of domain.supervision.

- `supervisor`: the generic `Supervisor` actor and `RootSupervisor`, the only top-level actor;
- `child`: `SupervisedChild`, the base any supervised actor kind derives from;
- `deadletters`: the `DeadLetterSink` port and its logging default;
- `processes`: /proc readings (pids, process groups, listening sockets) used to check and clean up;
- `testing`: sample children for tests.
"""

from supervisors.child import SupervisedChild
from supervisors.deadletters import (
    DeadLetterEvent,
    DeadLetterKind,
    DeadLetterSink,
    LoggingDeadLetterSink,
)
from supervisors.supervisor import ROOT_NAME, RootSupervisor, Supervisor

__all__ = [
    "ROOT_NAME",
    "DeadLetterEvent",
    "DeadLetterKind",
    "DeadLetterSink",
    "LoggingDeadLetterSink",
    "RootSupervisor",
    "SupervisedChild",
    "Supervisor",
]
