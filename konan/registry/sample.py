"""A small sample of reference data, for the validation sandbox to predict on.

Reads data (never code) with pyarrow and writes the first rows of the chosen columns to a
Parquet file that the sandbox process reads.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


def write_sample(source: Path, fmt: str, *, columns: list[str], rows: int, dest: Path) -> Path:
    batches: list[pa.RecordBatch] = []
    taken = 0
    if fmt == "parquet":
        reader = pq.ParquetFile(source)
        iterator = reader.iter_batches(batch_size=rows, columns=columns)
    else:
        iterator = iter(
            pacsv.open_csv(source, convert_options=pacsv.ConvertOptions(include_columns=columns))
        )
    for batch in iterator:
        batches.append(batch.slice(0, rows - taken))
        taken += batches[-1].num_rows
        if taken >= rows:
            break
    if fmt == "parquet":
        reader.close()
    table = pa.Table.from_batches(batches).select(columns)
    pq.write_table(table, dest)
    return dest
