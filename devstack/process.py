"""The stack's parts are detached processes: the utilities live in :mod:`adapters.processes`
(the local job runner uses them too), re-imported here for the parts."""

from __future__ import annotations

from adapters.processes import (
    ProcessRecord,
    ProcessSlot,
    is_alive,
    new_record,
    parse_proc_stat,
    process_identity,
    spawn_detached,
    tail,
    terminate,
)

__all__ = [
    "ProcessRecord",
    "ProcessSlot",
    "is_alive",
    "new_record",
    "parse_proc_stat",
    "process_identity",
    "spawn_detached",
    "tail",
    "terminate",
]
