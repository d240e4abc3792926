"""The child side of supervision, for any actor kind a Supervisor starts.

Subclass `SupervisedChild`, handle your init message, then call ``self.report_started(sender)``;
to end on purpose call ``self.stop_normally()``. Anything else that ends the actor is a crash to its
supervisor (restarted per its child spec).
"""

from __future__ import annotations

import os

from actors.facade import Address, TypedActor
from domain.supervision import ExitReason
from protocols.control import ChildStarted, ChildStopping
from supervisors.processes import boot_id, die_with_parent, process_ref

__all__ = ["SupervisedChild", "started_message"]


def started_message() -> ChildStarted:
    """`ChildStarted` describing the calling process."""
    pid = os.getpid()
    ref = process_ref(pid)
    return ChildStarted(
        pid=pid,
        pgid=os.getpgid(0),
        boot_id=boot_id(),
        start_time=ref.start_time if ref is not None else 0,
    )


class SupervisedChild(TypedActor):
    """Base for supervised actors: remembers its supervisor, reports its process, ends cleanly."""

    supervisor: Address | None = None
    linked: bool = False

    def report_started(self, supervisor: Address) -> None:
        """Tell ``supervisor`` (the sender of our init message) we are up, with our pid.

        Also links our process to our parent's (`die_with_parent`): if the supervisor is killed, so
        are we, and it restarts a whole fresh subtree rather than one beside our orphaned one.
        """
        self.link_to_parent_process()
        self.supervisor = supervisor
        self.tell(supervisor, started_message())

    def link_to_parent_process(self) -> None:
        if not self.linked and self.runs_in_own_process():
            self.linked = die_with_parent()

    def stop_normally(self, reason: ExitReason = ExitReason.NORMAL) -> None:
        """End without counting as a crash: tell the supervisor why, then exit."""
        if self.supervisor is not None:
            self.tell(self.supervisor, ChildStopping(reason=reason))
        self.exit_self()
