import builtins
import collections
import pickle

import numpy as np
import pytest

from cfcd.safe_pickle import UnsafePickleError, load_pickle

DATA = {
    "ints": np.arange(5, dtype=np.int64),
    "floats": np.ones((2, 3), dtype=np.float32),
    "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    "scalar": np.float64(2.5),
    "names": ["a", "b"],
    "set": {1, 2},
    "bytes": b"\x00\x01",
    "ordered": collections.OrderedDict(a=1),
}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_loads_data_of_every_protocol(tmp_path, protocol):
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps(DATA, protocol=protocol))
    loaded = load_pickle(path)
    assert loaded.keys() == DATA.keys()
    for key, value in DATA.items():
        np.testing.assert_array_equal(loaded[key], value)


class Evaluates:
    def __reduce__(self):
        return (builtins.eval, ("1 + 1",))


def test_refuses_callables_outside_the_allow_list(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([Evaluates()]))
    with pytest.raises(UnsafePickleError, match=r"evil.pkl: refused to load global builtins\.eval"):
        load_pickle(path)


def test_damaged_file_names_itself(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps(DATA)[:-10])
    with pytest.raises(ValueError, match="cut.pkl: not a readable pickle"):
        load_pickle(path)
