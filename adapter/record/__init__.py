"""Case records: loading, validating and the partial dates they are full of."""

from adapter.record.errors import RecordError, RecordErrors
from adapter.record.loader import load_record_bytes, load_record_file
from adapter.record.validate import validate_record

__all__ = [
    "RecordError",
    "RecordErrors",
    "load_record_bytes",
    "load_record_file",
    "validate_record",
]
