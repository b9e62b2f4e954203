"""curate.arrow builds the same arrays as pyarrow.array, and reads columns as pandas does,
without importing pandas."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate import arrow

CASES = [
    (pa.string(), ["a", None, "", "ünï", "x" * 300]),
    (pa.int64(), [1, None, -(2**62), 0]),
    (pa.int32(), [7, None, -3]),
    (pa.float64(), [1.5, None, float("nan"), 0.1]),
    (pa.float32(), [0.1, None, 3.0, 1e-40]),
    (pa.bool_(), [True, None, False, True, True, False, False, False, True]),
    (pa.list_(pa.int64()), [[1, 2], [], None, [3]]),
    (pa.list_(pa.string()), [["cut", "fade"], [], None, [None, "wipe"]]),
    (pa.list_(pa.float32(), 2), [[1.0, 2.0], None]),  # not built here: pyarrow's own conversion
]


@pytest.mark.parametrize(("type", "values"), CASES, ids=[str(t) for t, _ in CASES])
def test_same_array_as_pyarrow(type, values):
    for given in (values, [], [None] * 3):
        built = arrow.array(given, type)
        built.validate(full=True)
        assert built.type == type
        expected = pa.array(given, type)
        # to_string: NaN is no match for itself in equals
        assert (built.null_count, built.to_string()) == (expected.null_count, expected.to_string())


@pytest.mark.parametrize(("type", "values"), CASES, ids=[str(t) for t, _ in CASES])
def test_columns_read_as_pandas_reads_them(type, values):
    """to_numpy of an array, of a slice of it, of a column in two chunks and of an empty one:
    numbers as float64 with NaN for null (pandas' reading of a column with nulls), anything else
    as Python objects with None."""
    whole = pa.array(values, type)
    for column in (whole, whole.slice(1), pa.chunked_array([whole.slice(0, 1), whole.slice(1)]), whole.slice(0, 0)):
        read = arrow.to_numpy(column)
        if pa.types.is_integer(type) or pa.types.is_floating(type):
            assert read.dtype == np.float64
            expected = column.to_pandas().to_numpy().astype(np.float64)
            np.testing.assert_array_equal(read, expected)  # NaN matches NaN here
        else:
            assert read.dtype == object and read.tolist() == column.to_pylist()


@pytest.mark.parametrize("type", [pa.int8(), pa.uint16(), pa.float16()], ids=str)
def test_numbers_of_other_widths_read_as_float64(type):
    """Narrower or unsigned numbers (an Arrow type curate.arrow does not build) read like the
    others: float64, NaN where null, from a slice too."""
    whole = pa.array([1, None, 3, 120], type)
    for column in (whole, whole.slice(1), pa.chunked_array([whole.slice(0, 2), whole.slice(2)])):
        expected = np.array([np.nan if v is None else float(v) for v in column.to_pylist()])
        np.testing.assert_array_equal(arrow.to_numpy(column), expected)


def test_a_column_with_no_value_at_all_reads_as_missing_numbers():
    """A column of Arrow's null type (no value, no other type) reads as NaN, so that a rule's
    comparison with it is false instead of an error."""
    for column in (pa.nulls(3), pa.chunked_array([pa.nulls(2), pa.nulls(1)])):
        read = arrow.to_numpy(column)
        assert read.dtype == np.float64 and np.isnan(read).all() and len(read) == 3


def test_split_tables_without_pandas():
    """A split worker's tables (both manifests' schemas, a clip with nulls) leave pandas unloaded."""
    code = (
        "import sys\n"
        "from curate.manifest import to_table, CLIP_SCHEMA, VIDEO_SCHEMA\n"
        "to_table([{'video_id': 'v', 'cut_frames': [3], 'cut_kinds': ['cut'], 'fps': 30.0, 'interlaced': False}], VIDEO_SCHEMA)\n"
        "to_table([{'clip_id': 'c', 'start_frame': 0, 'brightness': 0.5}, {}], CLIP_SCHEMA)\n"
        "print('pandas' in sys.modules)\n"
    )
    repo = Path(__file__).resolve().parents[1]  # this checkout's curate, not an installed one
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo).stdout
    assert out.strip() == "False"


def test_transitions_table_without_pandas():
    """The learned detectors' `transitions` row (TransNetV2's per-frame probabilities) is built the
    same way: the float32 values kept exactly, and pandas left unloaded."""
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from curate.stages.split.video import transitions_table\n"
        "from curate.stages.split.transnet import Probabilities\n"
        "single, many_hot = np.array([0.1, 0.9, 1e-7], np.float32), np.array([0.25, 0.5, 0.75])\n"
        "row = transitions_table('v', Probabilities(single, many_hot)).to_pylist()[0]\n"
        "assert row['video_id'] == 'v'\n"
        "assert np.array_equal(np.array(row['single_frame_probs'], np.float32), single)\n"
        "assert row['many_hot_probs'] == [0.25, 0.5, 0.75]\n"
        "print('pandas' in sys.modules)\n"
    )
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo).stdout
    assert out.strip() == "False"
