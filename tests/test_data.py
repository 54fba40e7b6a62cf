"""tfbdl.data: the standard files are checked on reading; tensorflow-datasets path offline."""

import gzip
import os
import pathlib
import shutil
import struct
import zlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfbdl import data

SHARED = pathlib.Path(os.environ["TFBDL_DATA_DIR"])


def _copy(relative, data_dir):
    target = data_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SHARED / relative, target)
    return target


def test_the_table_holds_the_shared_files_checksums():
    for relative, expected in data.SHA256.items():
        assert data.sha256(SHARED / relative) == expected, relative


def test_intact_standard_files_load():
    images, labels = data.load_images("mnist", "test", source="local")
    assert images.shape == (10000, 28, 28, 1) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() == 1.0
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    x, y = data.egg_times()
    assert x.shape == (639, 2) and np.bincount(y).tolist() == [202, 117, 320]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_idx_file_names_path_both_checksums_and_remedy(tmp_path, damage):
    _copy("mnist/t10k-images-idx3-ubyte.gz", tmp_path)
    labels = _copy("mnist/t10k-labels-idx1-ubyte.gz", tmp_path)
    content = bytearray(labels.read_bytes())
    if damage == "truncate":
        content = content[:-100]
    else:
        content[len(content) // 2] ^= 0xFF
    labels.write_bytes(bytes(content))
    with pytest.raises(data.ChecksumError) as raised:
        data.load_images("mnist", "test", data_dir=tmp_path)
    message = str(raised.value)
    assert str(labels) in message
    assert data.SHA256["mnist/t10k-labels-idx1-ubyte.gz"] in message
    assert data.sha256(labels) in message
    assert "fresh copy" in message


def test_corrupt_egg_csv_fails(tmp_path):
    path = _copy("egg-times/egg_times.csv", tmp_path)
    path.write_text(path.read_text().replace("55.0,7.1,2", "55.0,7.1,1"))
    with pytest.raises(data.ChecksumError, match="egg_times.csv is corrupt"):
        data.egg_times(data_dir=tmp_path)


def test_own_file_under_another_name_is_read_unchecked(tmp_path):
    """A user's own labels (here: the test labels with one changed) in a custom data_dir."""
    labels = data.read_idx(SHARED / "mnist/t10k-labels-idx1-ubyte.gz").copy()
    labels[0] = (labels[0] + 1) % 10
    own = tmp_path / "my-labels-idx1-ubyte.gz"
    with gzip.open(own, "wb") as f:
        f.write(b"\x00\x00\x08\x01" + len(labels).to_bytes(4, "big") + labels.tobytes())
    np.testing.assert_array_equal(data.read_idx(own), labels)


@pytest.mark.parametrize("call", [
    lambda d: data.load_images("fashion_mnist", "train", data_dir=d, source="local"),
    lambda d: data.egg_times(data_dir=d),
])
def test_missing_file_says_where_it_looked_and_what_to_do(tmp_path, call):
    with pytest.raises(FileNotFoundError) as raised:
        call(tmp_path)
    message = str(raised.value)
    assert str(tmp_path) in message and "data_dir=" in message and data.DATA_DIR_ENV in message


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_tensorflow_datasets_path_with_mock_data(tmp_path, name):
    """No local files in data_dir: source='auto' falls back to tfds (mocked, no network)."""
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        images, labels = data.load_images(name, "test", data_dir=tmp_path)
    assert images.shape == (12, 28, 28, 1) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() > 0.0
    assert labels.dtype == np.int32 and set(labels) <= set(range(10))


def test_tensorflow_datasets_failure_says_what_to_do(tmp_path):
    def unreachable(*args, **kwargs):
        raise ConnectionError("no network")

    with tfds.testing.mock_data(as_dataset_fn=unreachable, policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(FileNotFoundError, match="ConnectionError: no network") as raised:
            data.load_images("mnist", "train", data_dir=tmp_path, source="tfds")
    assert str(tmp_path / "mnist") in str(raised.value) and data.DATA_DIR_ENV in str(raised.value)


def _idx(shape, body_size=None, header=None):
    """The bytes of an unsigned-byte IDX file of `shape` (body cut or padded to `body_size`)."""
    full = b"\x00\x00\x08" + bytes([len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    size = int(np.prod(shape)) if body_size is None else body_size
    return (full if header is None else full[:header]) + bytes(i % 251 for i in range(size))


def _write(path, content):
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(content)
    else:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("cut", [0, 3, 10])  # empty, inside the magic number, inside the shape
def test_truncated_idx_header_names_path_and_both_sizes(tmp_path, suffix, cut):
    path = _write(tmp_path / f"images-idx3-ubyte{suffix}", _idx((2, 3, 4), header=cut, body_size=0))
    with pytest.raises(ValueError, match="read_idx: .* is truncated") as raised:
        data.read_idx(path)
    message = str(raised.value)
    assert str(path) in message and f"found {cut} bytes" in message
    assert ("header of 16 bytes" if cut >= 4 else "header of 4 bytes") in message


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("body_size", [23, 25, 0])
def test_idx_body_of_the_wrong_size_names_path_and_both_sizes(tmp_path, suffix, body_size):
    path = _write(tmp_path / f"images-idx3-ubyte{suffix}", _idx((2, 3, 4), body_size=body_size))
    with pytest.raises(ValueError) as raised:
        data.read_idx(path)
    message = str(raised.value)
    assert str(path) in message and f"holds {body_size} bytes" in message
    assert "expected 24 bytes for shape (2, 3, 4)" in message


def test_intact_synthetic_idx_file_reads(tmp_path):
    path = _write(tmp_path / "images-idx3-ubyte.gz", _idx((2, 3, 4)))
    images = data.read_idx(path)
    assert images.shape == (2, 3, 4) and images.dtype == np.uint8
    assert images.ravel().tolist() == list(range(24))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_gzip_names_path_and_says_to_recopy(tmp_path, damage):
    path = _write(tmp_path / "images-idx3-ubyte.gz", _idx((50, 28, 28)))
    content = bytearray(path.read_bytes())
    if damage == "truncate":
        content = content[: len(content) // 2]
    else:
        content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(ValueError, match="truncated or corrupt.*Re-copy") as raised:
        data.read_idx(path)
    assert str(path) in str(raised.value)
    assert isinstance(raised.value.__cause__, (EOFError, zlib.error, gzip.BadGzipFile))


def test_truncated_standard_gzip_still_fails_its_checksum_first(tmp_path):
    labels = _copy("mnist/t10k-labels-idx1-ubyte.gz", tmp_path)
    _copy("mnist/t10k-images-idx3-ubyte.gz", tmp_path)
    labels.write_bytes(labels.read_bytes()[:-100])
    with pytest.raises(data.ChecksumError):
        data.load_images("mnist", "test", data_dir=tmp_path)


def test_image_and_label_counts_that_differ_name_both_files_and_counts(tmp_path, monkeypatch):
    (tmp_path / "mnist").mkdir()
    images = _write(tmp_path / "mnist/t10k-images-idx3-ubyte.gz", _idx((5, 28, 28)))
    labels = _write(tmp_path / "mnist/t10k-labels-idx1-ubyte.gz", _idx((4,)))
    for path in (images, labels):  # stand-ins for the standard files, checksums accepted
        monkeypatch.setitem(data.SHA256, f"mnist/{path.name}", data.sha256(path))
    with pytest.raises(ValueError, match="load_images: ") as raised:
        data.load_images("mnist", "test", data_dir=tmp_path, source="local")
    message = str(raised.value)
    assert str(images) in message and str(labels) in message
    assert "5 images" in message and "4 labels" in message
