"""Series → log partition: by device, so one device's series (and all per-series stream state)
live in one partition, and so on one worker.

``partition = crc32(device id) % partitions`` — the same function on every ingest node, in every
version (CRC-32 of the UTF-8 bytes, not Python's salted ``hash``). Rows without the device tag
(or with it null) go to partition 0. The hash runs once per distinct device of a batch (on the
dictionary of the column), then is gathered per row: no per-row Python work.
"""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def partition_of(device_id: str | None, partitions: int) -> int:
    """The partition of one device (``None``: partition 0)."""
    if partitions <= 1 or device_id is None:
        return 0
    return zlib.crc32(device_id.encode()) % partitions


def row_partitions(table: pa.Table, device_tag: str, partitions: int) -> np.ndarray:
    """Each row's partition (int32), from the ``device_tag`` column."""
    n = table.num_rows
    if partitions <= 1 or device_tag not in table.column_names:
        return np.zeros(n, np.int32)
    col = table[device_tag].combine_chunks()
    if not pa.types.is_dictionary(col.type):
        col = pc.dictionary_encode(col.cast(pa.string()))
    values = col.dictionary.cast(pa.string()).to_pylist()
    per_value = np.fromiter(
        (partition_of(v, partitions) for v in values), np.int32, count=len(values)
    )
    idx = col.indices.to_numpy(zero_copy_only=False)
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    out = np.zeros(n, np.int32)
    if len(per_value):
        out[valid] = per_value[idx[valid].astype(np.int64)]
    return out


def split_by_partition(
    table: pa.Table, device_tag: str, partitions: int
) -> list[tuple[int, pa.Table]]:
    """``table`` split into one table per partition it touches (row order kept within each),
    ascending by partition."""
    if partitions <= 1 or table.num_rows == 0:
        return [(0, table)]
    parts = row_partitions(table, device_tag, partitions)
    present = np.unique(parts)
    if len(present) == 1:
        return [(int(present[0]), table)]
    order = np.argsort(parts, kind="stable")
    bounds = np.searchsorted(parts[order], present, side="left").tolist() + [len(order)]
    taken = table.take(pa.array(order))
    return [
        (int(q), taken.slice(bounds[i], bounds[i + 1] - bounds[i]))
        for i, q in enumerate(present.tolist())
    ]
