"""A Thespian actor for test_sendpatch.py: tells itself notes and reports how many wake-up connections
its process opened meanwhile (`COUNT`, bumped by the starter's wrapper of ``interrupt_wait``)."""

from __future__ import annotations

from typing import Any

from thespian.actors import Actor

from actors.sendpatch import send_to_self_without_wakeup

COUNT = [0]  # interrupt_wait calls in this process (the starter wraps it before forking)


class Note:
    """A note to self of a type registered for no wake-up."""


class Other:
    """A note to self of a type not registered: Thespian's own path."""


send_to_self_without_wakeup(Note)


class SendPatchProbe(Actor):  # type: ignore[misc]
    """On ("go", "note" | "other", n): tells itself n notes of that kind, one after the other, then
    answers the asker with the wake-ups counted meanwhile."""

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, tuple) and message[0] == "go":
            self.asker, self.left, self.before = sender, message[2], COUNT[0]
            self.send(self.myAddress, Note() if message[1] == "note" else Other())
        elif isinstance(message, Note | Other):
            self.left -= 1
            if self.left > 0:
                self.send(self.myAddress, type(message)())
            else:
                self.send(self.asker, COUNT[0] - self.before)
