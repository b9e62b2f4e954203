"""Arrow arrays from Python values and numpy arrays from Arrow columns, through their buffers, so
that pandas is not imported.

`pyarrow.array` (and `pa.table`, `pa.scalar`, which go through it) imports pandas the first time
it runs, to check whether the values are a pandas object, and so does every `to_numpy`: about
0.3 s of CPU in every process that does either. The split command (its workers, its merge, its
summary) has no other use for pandas, so its columns are built and read here instead: numbers
through numpy, strings and lists from their offsets. The arrays are the same as
`pa.array(values, type)` gives (nulls where a value is None).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

# Arrow's fixed-width types built through numpy, and the numpy type of their values.
_NUMPY_TYPES = {
    pa.int32(): np.int32,
    pa.int64(): np.int64,
    pa.float32(): np.float32,
    pa.float64(): np.float64,
}


def array(values: list, type: pa.DataType) -> pa.Array:
    """`values` (Python objects, None for null) as an Arrow array of `type`. Strings, booleans,
    the numbers of `_NUMPY_TYPES` and variable-size lists of those are built without pandas;
    other types go through `pyarrow.array`."""
    if type in _NUMPY_TYPES or pa.types.is_boolean(type):
        return _fixed_width(values, type)
    if pa.types.is_string(type):
        return _strings(values)
    if pa.types.is_list(type):
        return _lists(values, type)
    return pa.array(values, type)


def _validity(values: list) -> tuple[pa.Buffer | None, int]:
    """The validity bitmap of `values` (None when nothing is null) and the number of nulls."""
    valid = np.fromiter((value is not None for value in values), bool, len(values))
    nulls = len(values) - int(valid.sum())
    return (pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None), nulls


def _fixed_width(values: list, type: pa.DataType) -> pa.Array:
    bitmap, nulls = _validity(values)
    filled = [False if value is None else value for value in values]  # a null's slot holds anything
    if pa.types.is_boolean(type):
        data = np.packbits(np.array(filled, bool), bitorder="little")
    else:
        data = np.array(filled, _NUMPY_TYPES[type])
    return pa.Array.from_buffers(type, len(values), [bitmap, pa.py_buffer(data)], null_count=nulls)


def _offsets(lengths: list[int]) -> pa.Buffer:
    """The int32 offsets buffer of items with these lengths."""
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.py_buffer(offsets)


def _strings(values: list) -> pa.Array:
    bitmap, nulls = _validity(values)
    encoded = [b"" if value is None else value.encode() for value in values]
    buffers = [bitmap, _offsets([len(item) for item in encoded]), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.string(), len(values), buffers, null_count=nulls)


def _lists(values: list, type: pa.ListType) -> pa.Array:
    bitmap, nulls = _validity(values)
    items = [() if value is None else value for value in values]
    flat = array([item for value in items for item in value], type.value_type)
    buffers = [bitmap, _offsets([len(value) for value in items])]
    return pa.Array.from_buffers(type, len(values), buffers, null_count=nulls, children=[flat])


def to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A column as pandas reads it, without pandas: integers and floats (of any width) as float64
    with NaN where null, anything else as Python objects (None where null). A column of type null
    (no value at all) reads as NaN: a comparison with it is false, as with a missing number."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    if pa.types.is_null(column.type):
        return np.full(len(column), np.nan)
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        values = np.empty(len(column), object)  # filled, not np.array(...): a list value stays one item
        values[:] = column.to_pylist()
        return values
    return np.concatenate([_numbers(chunk) for chunk in chunks]) if chunks else np.empty(0)


def _numbers(chunk: pa.Array) -> np.ndarray:
    validity, data = chunk.buffers()
    end = chunk.offset + len(chunk)  # a slice's buffers start at the parent array's first item
    values = np.frombuffer(data, chunk.type.to_pandas_dtype(), count=end)[chunk.offset :].astype(np.float64)
    if chunk.null_count:
        valid = np.unpackbits(np.frombuffer(validity, np.uint8), count=end, bitorder="little")[chunk.offset :]
        values[valid == 0] = np.nan
    return values
