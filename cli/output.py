"""``--json``: one JSON document on stdout, values spelled the same way by every command
(UUIDs as strings, times in ISO 8601 with their offset, enums by value)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from domain.schedules import format_interval


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help='print one JSON document on stdout (errors as {"error": ...} on stderr)',
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, UUID | Path):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return format_interval(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, BaseModel):  # its fields come back here, so spelled the same way
        return value.model_dump(mode="python")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, default=_jsonable)


def print_json(document: Mapping[str, Any]) -> None:
    print(to_json(document), flush=True)
