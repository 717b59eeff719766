"""What a dataset declares: its columns (optional), its checks, and what to do with bad rows."""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from eventops.lake.schemas import arrow_type
from eventops.lake.validation import Check

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,127}$"


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    type: str = Field(description="bool, int64, double, string, date, timestamp[us], ...")
    nullable: bool = True


class DatasetSpec(BaseModel):
    """A dataset as declared by its owner. Every field has a default: an undeclared dataset is
    created on first ingest with an inferred schema and no checks."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    columns: list[ColumnSpec] | None = None
    checks: list[Check] = Field(default_factory=list)
    on_bad_rows: Literal["quarantine_rows", "reject_batch"] = "quarantine_rows"

    def arrow_schema(self) -> pa.Schema | None:
        if self.columns is None:
            return None
        return pa.schema(
            [
                pa.field(
                    c.name, arrow_type(c.type, field_name=f"columns.{c.name}.type"), c.nullable
                )
                for c in self.columns
            ]
        )
