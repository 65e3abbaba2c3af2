"""Readers for image data sets stored on the local disk.

:func:`read_idx` reads one file in the IDX format of MNIST and
Fashion-MNIST; :func:`load_fashion_mnist` loads the four Fashion-MNIST files
from a folder. Nothing in this module downloads anything: the data must
already be on disk (see :func:`load_fashion_mnist` for how to get it).
"""
import gzip
import os
import pathlib
import stat
import struct
import zlib

import numpy as np

__all__ = ["FASHION_MNIST_CLASSES", "load_fashion_mnist", "read_idx"]

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

# Big-endian element types of the IDX format, by type code.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"

_DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# (images, labels) file names without ".gz", for the training and test sets.
_FASHION_MNIST_FILES = (
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
)


def read_idx(path):
    """Read one IDX file (the file format of MNIST and Fashion-MNIST).

    An IDX file holds a header -- two zero bytes, a type code byte, a byte
    with the number of dimensions ``ndim``, then ``ndim`` big-endian uint32
    sizes -- followed by the elements in C order, big-endian.

    Parameters
    ----------
    path : str or os.PathLike
        The file to read. It may be gzip-compressed; compression is detected
        from the content (the gzip magic bytes), not from the file name.

    Returns
    -------
    array : numpy.ndarray
        A new, writable array of the shape given in the header, in native
        byte order. Its dtype follows the type code: 0x08 uint8, 0x09 int8,
        0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    ValueError
        If `path` is a directory or another non-regular file, or is not a
        valid IDX file: corrupt gzip stream, bad magic bytes, unknown type
        code, truncated header, or a data size that does not match the
        header (truncated data or extra bytes). A header claiming far more
        data than the file holds fails before the array is allocated, so
        quickly and without a ``MemoryError`` (see Notes).
    OSError
        If the file cannot be opened or read for another reason, such as
        ``PermissionError``.
    MemoryError
        If the file really holds more data than fits in memory.

    Notes
    -----
    The data is read straight into the returned array, so peak memory is
    about one copy of the data, gzipped or not. A plain file's size is
    compared with the header before reading. A gzip file's decompressed
    size is only known once it has been decompressed; a header claiming
    more than the compressed size allows (deflate's ratio is at most about
    1032:1) is rejected at once. A header disagreeing with the gzip
    trailer's size field (the last member's size mod 2**32: a cut or
    corrupt file almost always disagrees) is checked by decompressing once
    without keeping the data, before the array is allocated; only then, or
    if the two agree, is the array allocated and the data decompressed into
    it, still checking that the stream ends exactly where the header says.
    """
    path = pathlib.Path(path)
    try:
        raw = open(path, "rb")
    except OSError as exc:
        # IsADirectoryError on POSIX, PermissionError on Windows.
        if path.is_dir():
            raise ValueError(
                f"path {path} is a directory, not an IDX file") from exc
        raise
    with raw:
        info = os.fstat(raw.fileno())
        if not stat.S_ISREG(info.st_mode):
            # Devices and pipes have no size to check the header against.
            raise ValueError(f"path {path} is not a regular file")
        file_size = info.st_size
        gzipped = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if not gzipped:
            return _read_idx_plain(raw, path, file_size)
        try:
            return _read_idx_gzip(raw, path, file_size)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt gzip data ({exc})") from exc


# Bytes per read into the array. Small so that no stream (gzip in
# particular, which returns a new bytes object per read) ever holds a second
# copy of the data.
_CHUNK_SIZE = 1 << 18

# Deflate's maximum compression ratio is 1032:1; the gzip header and trailer
# only make the real bound on a whole file lower.
_GZIP_MAX_RATIO = 1032


def _read_exactly(stream, n):
    data = stream.read(n)
    return data if data is not None else b""


def _read_header(stream, path):
    """Parse the IDX header; return (shape, dtype, header_size)."""
    head = _read_exactly(stream, 4)
    if len(head) < 4:
        raise ValueError(
            f"{path}: not an IDX file (only {len(head)} bytes, the header "
            f"alone needs at least 4)")
    if head[0] != 0 or head[1] != 0:
        raise ValueError(
            f"{path}: not an IDX file (bad magic: the first two bytes are "
            f"{head[:2].hex(' ')}, expected 00 00)")
    type_code, ndim = head[2], head[3]
    if type_code not in _IDX_DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in _IDX_DTYPES)
        raise ValueError(
            f"{path}: unknown IDX type code 0x{type_code:02X} "
            f"(known: {known})")
    header_size = 4 + 4 * ndim
    sizes = _read_exactly(stream, 4 * ndim)
    if len(sizes) < 4 * ndim:
        raise ValueError(
            f"{path}: truncated IDX header ({ndim} dimensions need "
            f"{header_size} header bytes, the file has {4 + len(sizes)})")
    shape = struct.unpack(f">{ndim}I", sizes)
    return shape, _IDX_DTYPES[type_code], header_size


def _data_size(shape, dtype):
    count = 1
    for size in shape:
        count *= size  # Python ints: no overflow, unlike np.prod
    return count * dtype.itemsize


def _size_error(path, shape, dtype, header_size, actual, what):
    """The ValueError for `actual` bytes where the header claims another
    size; `what` introduces `actual` ("the file has", "it decompresses
    to")."""
    claimed = header_size + _data_size(shape, dtype)
    kind = "truncated data" if actual < claimed else "extra bytes"
    return ValueError(
        f"{path}: {kind}: the header announces shape {shape} of "
        f"{dtype.name}, {claimed} bytes in all ({header_size} header + "
        f"{claimed - header_size} data), {what} {actual} bytes")


def _read_idx_plain(stream, path, file_size):
    shape, dtype, header_size = _read_header(stream, path)
    if header_size + _data_size(shape, dtype) != file_size:
        raise _size_error(path, shape, dtype, header_size, file_size,
                          "the file has")
    # The file may still change under us: _fill_array checks again.
    return _fill_array(stream, path, shape, dtype, header_size,
                       "the file has")


def _read_idx_gzip(raw, path, file_size):
    # The trailer's ISIZE is the last member's decompressed size mod 2**32
    # (read before decompression starts: GzipFile reads `raw` sequentially).
    isize = None
    if file_size >= 4:
        raw.seek(-4, os.SEEK_END)
        isize = struct.unpack("<I", raw.read(4))[0]
        raw.seek(0)
    stream = gzip.GzipFile(fileobj=raw, mode="rb")
    shape, dtype, header_size = _read_header(stream, path)
    claimed = header_size + _data_size(shape, dtype)
    bound = _GZIP_MAX_RATIO * file_size
    if claimed > bound:
        raise ValueError(
            f"{path}: truncated data: the header announces shape {shape} "
            f"of {dtype.name}, {claimed} bytes in all, but a {file_size}-"
            f"byte gzip file decompresses to at most {bound} bytes")
    if claimed % (1 << 32) != isize:
        # A corrupt, truncated or padded stream, or several gzip members
        # (where ISIZE covers the last one only): count the decompressed
        # bytes without keeping them, so that a wrong header fails before
        # the allocation.
        actual = header_size + _count_rest(stream)
        if actual != claimed:
            raise _size_error(path, shape, dtype, header_size, actual,
                              "it decompresses to")
        stream.seek(header_size)
    return _fill_array(stream, path, shape, dtype, header_size,
                       "it decompresses to")


def _count_rest(stream):
    """Read `stream` to its end in bounded chunks; return the byte count."""
    total = 0
    while True:
        got = len(_read_exactly(stream, _CHUNK_SIZE))
        if not got:
            return total
        total += got


def _fill_array(stream, path, shape, dtype, header_size, what):
    """Read the data following the header into a new array of `shape`.

    `stream` is positioned after the header; its remaining length must be
    exactly the data size, else ValueError (`what` as in _size_error).
    """
    expected = _data_size(shape, dtype)
    array = np.empty(expected // dtype.itemsize, dtype=dtype)
    view = memoryview(array).cast("B")
    actual = 0
    while actual < expected:
        got = stream.readinto(view[actual:actual + _CHUNK_SIZE])
        if not got:
            raise _size_error(path, shape, dtype, header_size,
                              header_size + actual, what)
        actual += got
    # One byte first: a bigger read would allocate its whole size even at
    # the end of the stream. At a gzip stream's end this also checks the CRC.
    extra = len(_read_exactly(stream, 1))
    if extra:
        extra += _count_rest(stream)
        raise _size_error(path, shape, dtype, header_size,
                          header_size + actual + extra, what)
    if not dtype.isnative:
        # big-endian in the file: swap the bytes in place, read as native
        array = array.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return array.reshape(shape)


def _find_file(folder, name):
    """``folder/name.gz``, else ``folder/name``, else None."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def _missing_files_error(folder, missing, source):
    all_names = ", ".join(
        f"{name}.gz" for pair in _FASHION_MNIST_FILES for name in pair)
    listed = ", ".join(f"{name}.gz (or {name})" for name in missing)
    where = f"folder {folder} ({source})"
    if not folder.is_dir():
        where += ", which does not exist"
    return FileNotFoundError(
        f"Fashion-MNIST data not found: missing {listed} in {where}. "
        f"fastcnn never downloads data; to get it, either install it with "
        f"`apt-get install dataset-fashion-mnist` (Debian/Ubuntu; it goes "
        f"to {_DEFAULT_FASHION_MNIST_DIR}), or download the four files "
        f"{all_names} from https://github.com/zalandoresearch/fashion-mnist "
        f"into a folder and pass data_dir=<that folder> (or set the "
        f"FASHION_MNIST_DIR environment variable to it).")


def _load_split(images_path, labels_path):
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise ValueError(
            f"{images_path}: expected 3-D images (n_samples, rows, cols), "
            f"got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(
            f"{images_path}: expected uint8 images, got {images.dtype}")
    if labels.ndim != 1:
        raise ValueError(
            f"{labels_path}: expected 1-D labels, got shape {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"image and label counts disagree: {images.shape[0]} images in "
            f"{images_path}, {labels.shape[0]} labels in {labels_path}")
    labels = labels.astype(np.int64)
    n_classes = len(FASHION_MNIST_CLASSES)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"{labels_path}: labels must be in 0..{n_classes - 1}, found "
            f"values in {labels.min()}..{labels.max()}")
    return images, labels


def load_fashion_mnist(data_dir=None):
    """Load Fashion-MNIST from a local folder.

    The folder must hold the four files of the data set, gzipped or not:
    ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` (or the
    same names without ``.gz``; the gzipped file wins if both exist).

    Nothing is downloaded. To get the files, either install the Debian/Ubuntu
    package (``apt-get install dataset-fashion-mnist``, which puts them in
    ``/usr/share/datasets/fashion-mnist``), or download them from
    https://github.com/zalandoresearch/fashion-mnist into a folder and pass
    that folder as `data_dir`.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Folder holding the four files. By default, the folder named by the
        environment variable ``FASHION_MNIST_DIR`` if it is set and not
        empty, else ``/usr/share/datasets/fashion-mnist``.

    Returns
    -------
    X_train : numpy.ndarray of uint8, shape (n_train, 28, 28)
        Training images, grey levels 0 (background) to 255. For the real
        data set ``n_train`` is 60000.
    y_train : numpy.ndarray of int64, shape (n_train,)
        Training labels in 0..9, indices into :data:`FASHION_MNIST_CLASSES`.
    X_test : numpy.ndarray of uint8, shape (n_test, 28, 28)
        Test images; ``n_test`` is 10000 for the real data set.
    y_test : numpy.ndarray of int64, shape (n_test,)
        Test labels in 0..9.

    Raises
    ------
    FileNotFoundError
        If any of the four files is missing; the message names the folder
        searched, the missing files, and how to get the data.
    ValueError
        If a file is not a valid IDX file (see :func:`read_idx`), the images
        are not 3-D uint8, the labels are not 1-D, image and label counts
        disagree, or a label is outside 0..9.

    Notes
    -----
    The image size is taken from the files and not checked, so that smaller
    files in the same format load too; the real data set has 28x28 images.
    """
    if data_dir is not None:
        folder, source = pathlib.Path(data_dir), "given as data_dir"
    elif os.environ.get("FASHION_MNIST_DIR"):
        folder = pathlib.Path(os.environ["FASHION_MNIST_DIR"])
        source = "from the FASHION_MNIST_DIR environment variable"
    else:
        folder = pathlib.Path(_DEFAULT_FASHION_MNIST_DIR)
        source = "the default"

    # Look for all four files before reading any, so that one error lists
    # everything that is missing.
    paths = {}
    missing = []
    for pair in _FASHION_MNIST_FILES:
        for name in pair:
            paths[name] = _find_file(folder, name)
            if paths[name] is None:
                missing.append(name)
    if missing:
        raise _missing_files_error(folder, missing, source)

    (X_train, y_train), (X_test, y_test) = (
        _load_split(paths[images], paths[labels])
        for images, labels in _FASHION_MNIST_FILES)
    return X_train, y_train, X_test, y_test
