"""The data lake: Parquet datasets on any fsspec storage, described by the catalog."""

from eventops.lake.catalog import IngestResult, Lake
from eventops.lake.schemas import SchemaConflict
from eventops.lake.spec import ColumnSpec, DatasetSpec
from eventops.lake.storage import LakeStorage
from eventops.lake.validation import AllowedValues, CustomPredicate, NotNull, Range, Unique

__all__ = [
    "AllowedValues",
    "ColumnSpec",
    "CustomPredicate",
    "DatasetSpec",
    "IngestResult",
    "Lake",
    "LakeStorage",
    "NotNull",
    "Range",
    "SchemaConflict",
    "Unique",
]
