import os
import pickle

import numpy as np
import pytest
from scipy.io import savemat

from cfcd import extraction
from cfcd.features import read_descriptors, read_eval_features
from cfcd.safe_pickle import UnsafePickleError

N_DB, N_Q, D = 7, 3, 5
RNG = np.random.default_rng(0)
DB = RNG.standard_normal((N_DB, D)).astype(np.float32)
Q = RNG.standard_normal((N_Q, D)).astype(np.float32)


@pytest.mark.parametrize("stored", [DB, DB.T, DB.astype(np.float64).T], ids=["n x d", "d x n", "float64 d x n"])
def test_npy_either_orientation(tmp_path, stored):
    np.save(tmp_path / "db.npy", stored)
    out = read_descriptors(tmp_path / "db.npy", N_DB)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, DB)


def test_square_matrix_follows_the_format_convention(tmp_path):
    square = RNG.standard_normal((D, D)).astype(np.float32)
    np.save(tmp_path / "sq.npy", square)
    savemat(tmp_path / "sq.mat", {"X": square})
    np.testing.assert_array_equal(read_descriptors(tmp_path / "sq.npy", D), square)
    np.testing.assert_array_equal(read_descriptors(tmp_path / "sq.mat", D), square.T)


def test_mat_written_by_cirtorch(tmp_path):
    savemat(tmp_path / "f.mat", {"X": DB.T, "Q": Q.T})
    db, q = read_eval_features(tmp_path / "f.mat", N_DB, N_Q)
    np.testing.assert_array_equal(db, DB)
    np.testing.assert_array_equal(q, Q)


def test_pkl_dict_and_two_files(tmp_path):
    with open(tmp_path / "f.pkl", "wb") as f:
        pickle.dump({"db": DB, "query": Q}, f)
    db, q = read_eval_features(tmp_path / "f.pkl", N_DB, N_Q)
    np.testing.assert_array_equal(db, DB)
    np.testing.assert_array_equal(q, Q)
    np.save(tmp_path / "db.npy", DB)
    np.save(tmp_path / "q.npy", Q.T)
    db, q = read_eval_features(tmp_path / "db.npy", N_DB, N_Q, query_path=tmp_path / "q.npy")
    np.testing.assert_array_equal(q, Q)


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pkl_with_code_is_refused(tmp_path):
    path = tmp_path / "f.pkl"
    path.write_bytes(pickle.dumps({"db": RunsCode(tmp_path / "ran"), "query": Q}))
    with pytest.raises(UnsafePickleError, match="f.pkl: refused"):
        read_eval_features(path, N_DB, N_Q)
    assert not (tmp_path / "ran").exists()


def test_cfcd_directory_goes_through_extraction(tmp_path, monkeypatch):
    calls = []

    def load_features(path, mmap=False):
        calls.append(path)
        return [f"img{i}" for i in range(N_DB)], DB, {"format": "cfcd-features"}

    monkeypatch.setattr(extraction, "load_features", load_features)
    np.testing.assert_array_equal(read_descriptors(tmp_path, N_DB), DB)
    assert calls == [tmp_path]


def test_errors_name_the_file_and_the_fix(tmp_path):
    np.save(tmp_path / "db.npy", DB)
    with pytest.raises(ValueError, match=r"db.npy: descriptors of shape \(7, 5\) do not describe 8 images"):
        read_descriptors(tmp_path / "db.npy", 8)
    with pytest.raises(ValueError, match="db.npy: holds one matrix; give the query descriptors as a second file"):
        read_eval_features(tmp_path / "db.npy", N_DB, N_Q)
    savemat(tmp_path / "f.mat", {"X": DB.T, "Z": Q.T})
    with pytest.raises(ValueError, match="f.mat: no matrix named Q or query or queries; it holds X, Z"):
        read_eval_features(tmp_path / "f.mat", N_DB, N_Q)
    (tmp_path / "f.h5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"f.h5: unknown descriptor format '.h5'; use .npy, .mat"):
        read_descriptors(tmp_path / "f.h5", N_DB)
    with pytest.raises(FileNotFoundError, match="absent.npy: no such descriptor file"):
        read_descriptors(tmp_path / "absent.npy", N_DB)
    np.save(tmp_path / "q.npy", np.zeros((N_Q, D + 1)))
    with pytest.raises(ValueError, match="5-d but query descriptors 6-d"):
        read_eval_features(tmp_path / "db.npy", N_DB, N_Q, query_path=tmp_path / "q.npy")
