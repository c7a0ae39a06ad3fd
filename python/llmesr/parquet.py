"""Parquet interaction logs (exports of data warehouses), read with pyarrow (`pip install "llmesr[parquet]"`).

A Parquet file is streamed, one row group at a time, into a tab-separated file with its column names
as the header, which the Rust core then reads like any TSV (columns found by name or named with
`--user-col` etc.). Only scalar columns are carried (strings, integers, floats, booleans, timestamps and
dates; list and struct columns such as review images are left out). Timestamps and dates become Unix
seconds (floored). A null or a value holding a tab or line break is an error naming the file, row and
column; an error of the core names the Parquet file and row, not the intermediate file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmesr import _native

DataError = _native.DataError
SEPARATORS = re.compile(r"[\t\r\n]")


def is_parquet(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path).lower().endswith((".parquet", ".parq", ".pq"))


def _pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError('reading Parquet needs pyarrow: pip install "llmesr[parquet]"') from None
    return pq


def scalar_columns(schema: Any) -> list[str]:
    import pyarrow as pa

    def scalar(t: Any) -> bool:
        return bool(
            pa.types.is_string(t)
            or pa.types.is_large_string(t)
            or pa.types.is_integer(t)
            or pa.types.is_floating(t)
            or pa.types.is_boolean(t)
            or pa.types.is_timestamp(t)
            or pa.types.is_date(t)
            or pa.types.is_dictionary(t)
        )

    return [f.name for f in schema if scalar(f.type)]


def _as_text(column: Any) -> list[str | None]:
    """A column's values as text; times as Unix seconds."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = column.type
    if pa.types.is_dictionary(t):
        column, t = column.dictionary_decode(), t.value_type
    if pa.types.is_timestamp(t):
        per_second = {"s": 1, "ms": 1000, "us": 1_000_000, "ns": 1_000_000_000}[t.unit]
        column = pc.floor(pc.divide(pc.cast(column.cast(pa.int64()), pa.float64()), per_second)).cast(pa.int64())
    elif pa.types.is_date(t):
        column = pc.multiply(pc.cast(column.cast(pa.date32()), pa.int64()), 86_400)
    elif pa.types.is_boolean(t):
        column = column.cast(pa.int8())
    return [None if v is None else str(v) for v in column.to_pylist()]


def rows_as_tsv(path: Path) -> Iterator[str]:
    """The header line, then one line per row."""
    pq = _pyarrow()
    try:
        source = pq.ParquetFile(path)
    except Exception as e:  # pyarrow's errors: ArrowInvalid, OSError...
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    names = scalar_columns(source.schema_arrow)
    if not names:
        raise DataError(f"{path}: no scalar columns to read (found {source.schema_arrow.names})")
    yield "\t".join(names) + "\n"
    row = 0
    try:
        batches = source.iter_batches(columns=names)
        for batch in batches:
            columns = [_as_text(batch.column(i)) for i in range(batch.num_columns)]
            for values in zip(*columns, strict=True):
                row += 1
                for name, value in zip(names, values, strict=True):
                    if value is None:
                        raise DataError(f"{path}: row {row}: column '{name}' is null")
                    if SEPARATORS.search(value):
                        raise DataError(f"{path}: row {row}: column '{name}' holds a tab or line break")
                yield "\t".join(values) + "\n"
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: after row {row}: {e}") from None


def convert(path: Path, folder: Path) -> Path:
    """Writes `path`'s rows as a TSV file in `folder` and returns it."""
    out = folder / f"{path.name}.tsv"
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(rows_as_tsv(path))
    return out


def name_the_source(message: str, converted: dict[str, Path]) -> str:
    """An error of the core about an intermediate file, about the Parquet file instead (line n of the
    TSV is row n - 1 of the Parquet file, after the header)."""
    for tsv, original in converted.items():

        def as_row(m: re.Match[str], original: Path = original) -> str:
            return f"{original}: row {int(m.group(1)) - 1}:"

        message = re.sub(re.escape(tsv) + r":(\d+):", as_row, message).replace(tsv, str(original))
    return message
