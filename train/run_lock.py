"""One live training run per output folder.

Two `train.align` runs writing the same `run.output_dir` interleave checkpoints and the later export
silently replaces the earlier aligner. The first run holds `run.lock` (its pid, host and start time);
a second is refused, naming the first. A lock whose process has died (a killed run) is stale: the
next run takes it over and says so.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path

LOCK_FILE = "run.lock"


class RunLocked(FileExistsError):
    """Another live run holds the output folder."""


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), which tells a reused pid from the original."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # another machine's run (a shared file system): we cannot see it, so it counts as live
    pid = int(holder.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    started = _process_start(pid)
    return started is None or holder.get("process_start") in (None, started)


def describe(holder: dict) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"


class RunLock:
    """`with RunLock(folder, log):` holds `folder/run.lock` for the run's lifetime (rank 0 only)."""

    def __init__(self, folder: str | os.PathLike[str], log=print) -> None:
        self.path = Path(folder) / LOCK_FILE
        self.log = log

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start(os.getpid()),
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        draft = self.path.with_name(f".{LOCK_FILE}.{os.getpid()}")
        draft.write_text(json.dumps(me))
        try:
            for _ in range(2):  # a second try after removing a stale lock
                try:
                    os.link(draft, self.path)  # atomic, and the lock never exists without its contents
                    return self
                except FileExistsError:
                    self._refuse_or_clear()
        finally:
            draft.unlink(missing_ok=True)
        raise RunLocked(f"could not take {self.path}: another run took it at the same moment; try again.")

    def _refuse_or_clear(self) -> None:
        """Refuse a live holder; remove a dead one's lock."""
        holder = self._holder()
        if holder is not None and _alive(holder):
            raise RunLocked(
                f"{self.path.parent} is in use by another train.align run ({describe(holder)}). Wait for it to finish, "
                f"stop it, or choose another run.output_dir. If no such run exists, delete {self.path}."
            )
        self.log(f"note: {self.path} was left by a run that is no longer running "
                 f"({describe(holder) if holder else 'unreadable lock'}); taking it over")
        self.path.unlink(missing_ok=True)

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)
