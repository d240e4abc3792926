"""What the OS says about processes and their listening sockets, read from /proc (Linux; no psutil).

Used to identify a process beyond its pid (pid + start time + boot id, so a reused pid is never
mistaken for ours), to find every process of an actor system (they share the admin's process group),
and to list the TCP sockets those processes listen on.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ListeningSocket",
    "ProcessRef",
    "boot_id",
    "die_with_parent",
    "is_alive",
    "kill_process",
    "listening_sockets",
    "process_group_members",
    "process_ref",
]

_PROC = Path("/proc")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessRef:
    """A process identified beyond its pid: the kernel's start time (clock ticks since boot)."""

    pid: int
    start_time: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ListeningSocket:
    pid: int
    host: str
    port: int


def boot_id() -> str:
    """This boot's id: two processes with the same pid and boot id on one host are one process."""
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send us ``sig`` when the process that forked us dies (Linux only).

    In a multiproc actor system each actor is forked by its parent actor, so this makes a killed
    supervisor take its whole subtree down, as an OTP link would, instead of leaving orphans that
    keep running and answering (THESPIAN.md). Call it only in an actor's own process.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if os.getppid() == 1:  # the parent died before the call: we would never get the signal
        os.kill(os.getpid(), sig)
    return True


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # the command name is in parentheses and may itself contain spaces or parentheses
    return raw[raw.rindex(")") + 2 :].split()


def process_ref(pid: int) -> ProcessRef | None:
    """The process now holding ``pid``, or None if there is none (or only a zombie)."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return ProcessRef(pid=pid, start_time=int(fields[19]))


def is_alive(ref: ProcessRef) -> bool:
    """Whether that very process (not a later one reusing its pid) still runs."""
    now = process_ref(ref.pid)
    return now is not None and now.start_time == ref.start_time


def kill_process(ref: ProcessRef, sig: int = signal.SIGKILL) -> bool:
    """Signal the process if it is still that process; never our own. Returns whether it was sent."""
    if ref.pid in (0, 1, os.getpid()) or not is_alive(ref):
        return False
    try:
        os.kill(ref.pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def process_group_members(pgid: int) -> list[ProcessRef]:
    """Every live process whose process group is ``pgid``."""
    if pgid <= 1:
        return []
    found: list[ProcessRef] = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or fields[0] in ("Z", "X") or int(fields[2]) != pgid:
            continue
        found.append(ProcessRef(pid=int(entry.name), start_time=int(fields[19])))
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        fds = list((_PROC / str(pid) / "fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _decode_v4(hex_addr: str) -> str:
    return socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(hex_addr, 16)))


def _decode_v6(hex_addr: str) -> str:
    words = [struct.pack("<I", int(hex_addr[i : i + 8], 16)) for i in range(0, 32, 8)]
    return socket.inet_ntop(socket.AF_INET6, b"".join(words))


def listening_sockets(pids: list[int]) -> list[ListeningSocket]:
    """TCP sockets in LISTEN state held by any of ``pids`` (IPv4 and IPv6)."""
    owner: dict[int, int] = {}
    for pid in pids:
        for inode in _socket_inodes(pid):
            owner.setdefault(inode, pid)
    found: list[ListeningSocket] = []
    for table, decode in (("tcp", _decode_v4), ("tcp6", _decode_v6)):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] != "0A":  # TCP_LISTEN
                continue
            inode = int(cols[9])
            if inode in owner:
                host_hex, port_hex = cols[1].split(":")
                found.append(
                    ListeningSocket(pid=owner[inode], host=decode(host_hex), port=int(port_hex, 16))
                )
    return found
