"""Dataset readers: IDX files and Fashion-MNIST.

All tests but the last one write small IDX files of their own to tmp_path,
so they need neither the real data nor the network. The last one checks the
real Fashion-MNIST files and is skipped where they are not installed.
"""
import contextlib
import gzip
import os
import struct
import tracemalloc

import numpy as np
import pytest

from fastcnn.datasets import (FASHION_MNIST_CLASSES, load_fashion_mnist,
                              read_idx)

REAL_DIR = "/usr/share/datasets/fashion-mnist"

_TYPE_CODES = {
    np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B,
    np.dtype("i4"): 0x0C, np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E,
}


def idx_bytes(array, type_code=None):
    """The IDX encoding of `array`, written independently of read_idx."""
    array = np.asarray(array)
    code = _TYPE_CODES[array.dtype] if type_code is None else type_code
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim,
                         *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array, gz=False):
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_fake_fashion(folder, n_train=12, n_test=5, gz=True, seed=0):
    """Four small Fashion-MNIST-like files; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    arrays = []
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        X = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", X, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", y, gz)
        arrays += [X, y]
    return arrays


# ---------------------------------------------------------------- read_idx

@pytest.mark.parametrize("shape", [(3, 4, 5), (7,)], ids=["3d", "1d"])
def test_read_idx_uint8_round_trip(tmp_path, shape):
    a = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape) * 7
    out = read_idx(write_idx(tmp_path / "a.idx", a))
    assert out.dtype == np.uint8
    assert out.shape == shape
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize("dtype", ["i1", "i2", "i4", "f4", "f8"])
def test_read_idx_big_endian_types(tmp_path, dtype):
    # Negative values and values above 255 so that every byte matters.
    scale = 10 if dtype == "i1" else 1001.25
    a = (np.arange(-6, 6).reshape(3, 4) * scale).astype(dtype)
    path = tmp_path / "a.idx"
    path.write_bytes(idx_bytes(a))
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype)
    assert out.dtype.isnative
    assert out.shape == (3, 4)
    np.testing.assert_array_equal(out, a)


def test_read_idx_big_endian_bytes_decoded(tmp_path):
    # Raw bytes written by hand, so that a reader which got the byte order
    # wrong could not agree with an encoder making the same mistake.
    path = tmp_path / "a.idx"
    path.write_bytes(bytes([0, 0, 0x0C, 1, 0, 0, 0, 2,
                            0, 0, 1, 0, 0xFF, 0xFF, 0xFF, 0xFE]))
    out = read_idx(path)
    assert out.dtype == np.int32
    assert out.tolist() == [256, -2]


def test_read_idx_gzipped_and_plain_identical(tmp_path):
    a = np.random.default_rng(1).standard_normal((4, 3, 2)).astype(np.float32)
    # Misleading names: gzip is detected from the content, not the suffix.
    plain = write_idx(tmp_path / "plain.gz", a, gz=False)
    packed = write_idx(tmp_path / "packed.idx", a, gz=True)
    assert packed.read_bytes()[:2] == b"\x1f\x8b"
    out_plain, out_packed = read_idx(plain), read_idx(packed)
    assert out_plain.dtype == out_packed.dtype == np.float32
    np.testing.assert_array_equal(out_plain, a)
    np.testing.assert_array_equal(out_packed, out_plain)


def test_read_idx_accepts_str_and_returns_writable(tmp_path):
    a = np.arange(6, dtype=np.uint8)
    out = read_idx(str(write_idx(tmp_path / "a.idx", a)))
    out[0] = 42  # would raise on a read-only np.frombuffer view
    assert out[0] == 42


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(b"\x01\x00" + idx_bytes(np.zeros(3, np.uint8))[2:])
    with pytest.raises(ValueError, match=r"bad magic") as info:
        read_idx(path)
    assert "bad.idx" in str(info.value)


def test_read_idx_unknown_type_code(tmp_path):
    path = tmp_path / "type.idx"
    path.write_bytes(idx_bytes(np.zeros(3, np.uint8), type_code=0x0A))
    with pytest.raises(ValueError, match=r"unknown IDX type code 0x0A"):
        read_idx(path)


def test_read_idx_truncated_data(tmp_path):
    path = tmp_path / "short.idx"
    path.write_bytes(idx_bytes(np.zeros((2, 3), np.int16))[:-1])
    with pytest.raises(ValueError, match=r"short\.idx: truncated data"):
        read_idx(path)


def test_read_idx_truncated_gzip_data(tmp_path):
    path = tmp_path / "short.gz"
    data = idx_bytes(np.zeros((2, 3), np.uint8))[:-2]
    path.write_bytes(gzip.compress(data))
    with pytest.raises(ValueError, match=r"short\.gz: truncated data"):
        read_idx(path)


def test_read_idx_truncated_header(tmp_path):
    path = tmp_path / "head.idx"
    path.write_bytes(bytes([0, 0, 0x08, 3, 0, 0, 0, 2]))
    with pytest.raises(ValueError, match=r"truncated IDX header"):
        read_idx(path)


def test_read_idx_extra_bytes(tmp_path):
    path = tmp_path / "long.idx"
    path.write_bytes(idx_bytes(np.zeros(4, np.float64)) + b"\x00")
    with pytest.raises(ValueError, match=r"long\.idx: extra bytes"):
        read_idx(path)


def test_read_idx_corrupt_gzip(tmp_path):
    path = tmp_path / "corrupt.idx"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(50, np.uint8)))[:-10])
    with pytest.raises(ValueError, match=r"corrupt\.idx: corrupt gzip"):
        read_idx(path)


def idx_header(type_code, shape):
    """An IDX header alone, for files whose data does not match it."""
    return struct.pack(f">BBBB{len(shape)}I", 0, 0, type_code, len(shape),
                       *shape)


@contextlib.contextmanager
def traced_peak():
    """Yield a list that receives the peak traced memory (bytes) at exit.

    numpy reports its data buffers to tracemalloc, so an array allocated and
    freed inside the block still shows in the peak.
    """
    result = []
    tracemalloc.start()
    try:
        yield result
    finally:
        result.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


_MiB = 1 << 20


def test_read_idx_huge_claim_rejected_before_allocating(tmp_path):
    # 14 bytes claiming 1 TiB (1 dimension cannot: 2**32 - 1 elements of at
    # most 8 bytes is 32 GiB, so 2 dimensions and a 12-byte header). Reading
    # must compare with the file size instead of asking for 1 TiB (a
    # MemoryError, or with overcommit a 1 TiB reservation).
    path = tmp_path / "huge.idx"
    path.write_bytes(idx_header(0x08, (1 << 20, 1 << 20)) + b"\x00\x00")
    with traced_peak() as peak:
        with pytest.raises(ValueError, match=r"huge\.idx: truncated data"
                           ) as info:
            read_idx(path)
    assert peak[0] < _MiB
    message = str(info.value)
    assert str(path) in message
    assert str((1 << 40) + 12) in message  # the size the header claims
    assert "14 bytes" in message           # the size of the file


def test_read_idx_truncated_plain_file_not_allocated(tmp_path):
    path = tmp_path / "cut.idx"
    # A 16 MiB array cut after 1000 data bytes.
    path.write_bytes(idx_header(0x08, (4096, 4096)) + bytes(1000))
    with traced_peak() as peak:
        with pytest.raises(ValueError, match=r"cut\.idx: truncated data"
                           ) as info:
            read_idx(path)
    assert peak[0] < _MiB
    assert str(16 * _MiB + 12) in str(info.value)
    assert "1012 bytes" in str(info.value)


def test_read_idx_truncated_gzip_file_not_allocated(tmp_path):
    path = tmp_path / "cut.gz"
    # Random bytes barely compress: 64 KiB of gzip could hold 16 MiB by the
    # compression ratio alone, so the check must use the stream itself.
    data = np.random.default_rng(2).integers(0, 256, 64 * 1024, np.uint8)
    path.write_bytes(gzip.compress(idx_header(0x08, (4096, 4096))
                                   + data.tobytes()))
    with traced_peak() as peak:
        with pytest.raises(ValueError, match=r"cut\.gz: truncated data"
                           ) as info:
            read_idx(path)
    assert peak[0] < 4 * _MiB  # far below the 16 MiB claimed
    assert str(16 * _MiB + 12) in str(info.value)
    assert str(64 * 1024 + 12) in str(info.value)


def test_read_idx_gzip_claim_beyond_compression_ratio(tmp_path):
    # A few dozen bytes of gzip cannot decompress to 1 TiB (deflate's
    # ratio is at most about 1032:1), so this fails before decompressing.
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(idx_header(0x08, (1 << 20, 1 << 20))))
    with traced_peak() as peak:
        with pytest.raises(ValueError, match=r"bomb\.gz: truncated data"
                           ) as info:
            read_idx(path)
    assert peak[0] < _MiB
    assert str((1 << 40) + 12) in str(info.value)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_read_idx_trailing_data_names_both_sizes(tmp_path, gz):
    path = tmp_path / "long.idx"
    data = idx_bytes(np.zeros((2, 3), np.int32)) + bytes(100)  # 36 + 100
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(ValueError, match=r"long\.idx: extra bytes") as info:
        read_idx(path)
    assert "36 bytes" in str(info.value)   # claimed by the header
    assert "136 bytes" in str(info.value)  # present


def test_read_idx_directory(tmp_path):
    folder = tmp_path / "a_folder.idx"
    folder.mkdir()
    with pytest.raises(ValueError, match=r"path .* is a directory") as info:
        read_idx(folder)
    assert str(folder) in str(info.value)


def test_read_idx_missing_file(tmp_path):
    path = tmp_path / "absent.idx"
    with pytest.raises(FileNotFoundError, match=r"absent\.idx"):
        read_idx(path)


def test_read_idx_gzip_peak_memory_one_copy(tmp_path):
    # Very compressible data (4 MiB in a few KiB of gzip), so that a reader
    # asking the gzip module for everything at once gets one 4 MiB bytes
    # object on top of the array.
    a = np.tile(np.arange(256, dtype=np.uint8), (16384, 1))
    path = write_idx(tmp_path / "big.gz", a, gz=True)
    with traced_peak() as peak:
        out = read_idx(path)
        del out
    assert peak[0] < 1.5 * a.nbytes


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("shape", [(0,), (3, 5, 7), (3, 250_000)],
                         ids=["empty", "small", "several-MiB"])
def test_read_idx_round_trip_every_dtype(tmp_path, gz, dtype, shape):
    # The several-MiB arrays span several read chunks.
    rng = np.random.default_rng(3)
    a = (rng.standard_normal(shape) * 100).astype(dtype)
    out = read_idx(write_idx(tmp_path / "a.idx", a, gz=gz))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.flags.writeable and out.flags.c_contiguous
    np.testing.assert_array_equal(out, a)


def test_read_idx_gzip_multi_member_and_zero_padding(tmp_path):
    # The trailer's ISIZE is that of the last member only, and zero bytes
    # after the last member are allowed: neither may be taken for a size
    # mismatch.
    a = np.arange(1000, dtype=np.int16)
    data = idx_bytes(a)
    path = tmp_path / "multi.gz"
    path.write_bytes(gzip.compress(data[:700]) + gzip.compress(data[700:])
                     + bytes(16))
    np.testing.assert_array_equal(read_idx(path), a)


# ------------------------------------------------------ load_fashion_mnist

def test_class_names():
    assert len(FASHION_MNIST_CLASSES) == 10
    assert FASHION_MNIST_CLASSES[0] == "T-shirt/top"
    assert FASHION_MNIST_CLASSES[9] == "Ankle boot"


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_load_fashion_mnist_fake_files(tmp_path, gz):
    X_train, y_train, X_test, y_test = write_fake_fashion(tmp_path, gz=gz)
    out = load_fashion_mnist(tmp_path)
    assert len(out) == 4
    assert out[0].shape == (12, 28, 28) and out[2].shape == (5, 28, 28)
    assert out[0].dtype == out[2].dtype == np.uint8
    assert out[1].dtype == out[3].dtype == np.int64
    for got, expected in zip(out, (X_train, y_train, X_test, y_test)):
        np.testing.assert_array_equal(got, expected)


def test_load_fashion_mnist_missing_file(tmp_path):
    write_fake_fashion(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "t10k-labels-idx1-ubyte" in message
    assert "missing train-" not in message  # only the missing file listed
    assert "apt-get install dataset-fashion-mnist" in message
    assert "github.com/zalandoresearch/fashion-mnist" in message
    assert "data_dir" in message


def test_load_fashion_mnist_missing_folder(tmp_path):
    folder = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        load_fashion_mnist(folder)
    message = str(info.value)
    assert str(folder) in message
    for name in ("train-images", "train-labels", "t10k-images", "t10k-labels"):
        assert name in message


def test_load_fashion_mnist_count_mismatch(tmp_path):
    write_fake_fashion(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(11, np.uint8))
    with pytest.raises(ValueError, match=r"counts disagree: 12 images .* 11"):
        load_fashion_mnist(tmp_path)


def test_load_fashion_mnist_images_not_3d(tmp_path):
    write_fake_fashion(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-images-idx3-ubyte",
              np.zeros((5, 784), np.uint8))
    with pytest.raises(ValueError, match=r"expected 3-D images"):
        load_fashion_mnist(tmp_path)


def test_load_fashion_mnist_label_out_of_range(tmp_path):
    write_fake_fashion(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte",
              np.array([0, 1, 10, 2, 3], np.uint8))
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.9"):
        load_fashion_mnist(tmp_path)


def test_load_fashion_mnist_env_override(tmp_path, monkeypatch):
    arrays = write_fake_fashion(tmp_path / "env", n_train=3, n_test=2)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "env"))
    out = load_fashion_mnist()
    assert out[0].shape == (3, 28, 28)
    np.testing.assert_array_equal(out[3], arrays[3])

    # data_dir wins over the environment variable.
    write_fake_fashion(tmp_path / "arg", n_train=4, n_test=1)
    assert load_fashion_mnist(tmp_path / "arg")[0].shape == (4, 28, 28)

    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError,
                       match="from the FASHION_MNIST_DIR env") as info:
        load_fashion_mnist()
    assert str(tmp_path / "empty") in str(info.value)


@pytest.mark.skipif(not os.path.isdir(REAL_DIR),
                    reason=f"real Fashion-MNIST not installed in {REAL_DIR}")
def test_load_fashion_mnist_real_data(monkeypatch):
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    X_train, y_train, X_test, y_test = load_fashion_mnist()
    assert X_train.shape == (60000, 28, 28)
    assert X_test.shape == (10000, 28, 28)
    assert X_train.dtype == X_test.dtype == np.uint8
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert y_train.dtype == y_test.dtype == np.int64
    assert y_train.min() == 0 and y_train.max() == 9
    assert y_test.min() == 0 and y_test.max() == 9
    np.testing.assert_array_equal(np.bincount(y_train, minlength=10),
                                  np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10),
                                  np.full(10, 1000))
