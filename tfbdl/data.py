"""Data sets of the seed studies: two moons, egg boiling times, MNIST and Fashion-MNIST.

Images load through `tensorflow-datasets` when it can reach its source, and from local IDX
files otherwise. The local directory is `data_dir=`, else `$TFBDL_DATA_DIR`, else
`../shared/data` beside the project; it holds `mnist/` and `fashion-mnist/` with the usual
`*-idx?-ubyte.gz` files and `egg-times/egg_times.csv`.

Every standard file is checked against its published SHA-256 (`SHA256`, from
`../shared/data/README.md`) when it is read, so a truncated copy or a half-finished
download fails with a `ChecksumError` naming the file, instead of training on garbage.
Files of one's own, read with `read_idx(path)`, are not checked.
"""

import gzip
import hashlib
import os
import pathlib
import zlib

import numpy as np

DATA_DIR_ENV = "TFBDL_DATA_DIR"
_PROJECT_DATA_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IMAGE_DATASETS = {"mnist": "mnist", "fashion_mnist": "fashion-mnist"}
_EGG_TIMES = "egg-times/egg_times.csv"

# SHA-256 of the standard files, by path relative to the data directory. The IDX files'
# are the published files' (their md5s match LeCun's and Zalando's); the egg CSV's is that
# of DoctorLoop/BayesianDeepLearning's egg_times.csv (md5 b4e5c07b351dddfc88136ce908622b4f).
SHA256 = {
    "mnist/train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "mnist/train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "mnist/t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "mnist/t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "fashion-mnist/train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "fashion-mnist/train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "fashion-mnist/t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "fashion-mnist/t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    _EGG_TIMES: "0257282983d7961b21203d030cda3d452ab2e9987f9b28d0c491f1d8e920f714",
}


class ChecksumError(ValueError):
    """A standard data file whose SHA-256 is not the published one (corrupt or truncated)."""


def resolve_data_dir(data_dir=None):
    """The local data directory: the argument, else $TFBDL_DATA_DIR, else ../shared/data."""
    return pathlib.Path(data_dir or os.environ.get(DATA_DIR_ENV) or _PROJECT_DATA_DIR)


def sha256(path):
    """The SHA-256 hex digest of the file at `path`, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _standard_file(data_dir, relative, what):
    """The path of standard file `relative` under `data_dir`, checked to exist and be intact."""
    path = data_dir / relative
    if not path.exists():
        raise FileNotFoundError(
            f"{what} not found: looked for {path}. Put the file there, pass data_dir=..., "
            f"or set ${DATA_DIR_ENV} to the folder that holds it (see ../shared/data/README.md)."
        )
    expected, found = SHA256[relative], sha256(path)
    if found != expected:
        raise ChecksumError(
            f"{what}: {path} is corrupt or truncated ({path.stat().st_size} bytes): its SHA-256 is "
            f"{found}, expected {expected}. Replace it with a fresh copy of the published file "
            f"(../shared/data/{relative}, or the dataset's authors' site); a data set of your own "
            "belongs under another file name, read with tfbdl.data.read_idx."
        )
    return path


def two_moons(num_examples=1000, noise=0.2, test_fraction=0.5, seed=0):
    """Two interleaving half circles (scikit-learn's `make_moons`), standardized.

    Returns ((x_train, y_train), (x_test, y_test)), x float32 of shape (n, 2), y in {0, 1}.
    """
    from sklearn.datasets import make_moons
    from sklearn.model_selection import train_test_split

    if num_examples < 4:
        raise ValueError(f"two_moons: `num_examples` must be >= 4, got num_examples={num_examples!r}.")
    x, y = make_moons(n_samples=num_examples, noise=noise, random_state=seed)
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y.astype("int32"), test_size=test_fraction, random_state=seed, stratify=y
    )
    return (x_train, y_train), (x_test, y_test)


def egg_times(data_dir=None):
    """The egg boiling data: x = (weight in grams, minutes boiled), y = outcome.

    Outcomes: 0 underdone, 1 soft-boiled, 2 hard-boiled (639 eggs). Returns (x, y) as
    float32 (n, 2) and int32 (n,).
    """
    import pandas as pd

    path = _standard_file(resolve_data_dir(data_dir), _EGG_TIMES, "the egg boiling times CSV")
    frame = pd.read_csv(path, index_col=0)
    return frame[["weight", "time"]].to_numpy("float32"), frame["outcome"].to_numpy("int32")


def read_idx(path):
    """Reads a (gzipped) IDX file into a uint8 array (LeCun's MNIST format); no checksum.

    A header or body shorter than the header announces, trailing bytes, or a truncated or
    corrupt gzip stream raise a ValueError naming the path.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            shape, header_size = _read_idx_header(f, path)
            body = f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise ValueError(
            f"read_idx: {path} is truncated or corrupt ({type(error).__name__}: {error}). "
            "Re-copy it from its source."
        ) from error
    expected = int(np.prod(shape))
    if len(body) != expected:
        raise ValueError(
            f"read_idx: {path} holds {len(body)} bytes of data after its {header_size}-byte "
            f"header, expected {expected} bytes for shape {shape} (the file is truncated or has "
            "trailing bytes)."
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _read_idx_header(f, path):
    """(shape, header size in bytes) of the IDX file open as `f`, checked to be complete."""
    magic = f.read(4)
    if len(magic) == 4 and (magic[:2] != b"\x00\x00" or magic[2] != 0x08):
        raise ValueError(f"read_idx: {path} is not an unsigned-byte IDX file (header {magic!r}).")
    header_size = 4 + 4 * magic[3] if len(magic) == 4 else 4
    header = magic + f.read(header_size - len(magic))
    if len(header) < header_size:
        announced = f"its magic number {magic.hex()} announces" if len(magic) == 4 else "IDX needs"
        raise ValueError(
            f"read_idx: {path} is truncated: {announced} a header of {header_size} bytes, "
            f"found {len(header)} bytes."
        )
    shape = tuple(int.from_bytes(header[i : i + 4], "big") for i in range(4, header_size, 4))
    return shape, header_size


def load_images(name, split="train", data_dir=None, source="auto"):
    """MNIST or Fashion-MNIST as (images float32 in [0, 1] of shape (n, 28, 28, 1), labels int32).

    Args:
        name: "mnist" or "fashion_mnist".
        split: "train" or "test".
        data_dir: local folder with the IDX files (see the module docstring).
        source: "local" (IDX files, checksums verified), "tfds" (tensorflow-datasets), or
            "auto": local files when present, else tensorflow-datasets.
    """
    if name not in _IMAGE_DATASETS:
        raise ValueError(f"load_images: `name` must be one of {sorted(_IMAGE_DATASETS)}, got name={name!r}.")
    if split not in _IDX_FILES:
        raise ValueError(f"load_images: `split` must be 'train' or 'test', got split={split!r}.")
    if source not in ("auto", "local", "tfds"):
        raise ValueError(f"load_images: `source` must be 'auto', 'local' or 'tfds', got source={source!r}.")
    data_dir = resolve_data_dir(data_dir)
    image_file, label_file = (f"{_IMAGE_DATASETS[name]}/{f}" for f in _IDX_FILES[split])
    if source == "tfds" or (source == "auto" and not (data_dir / image_file).exists()):
        return _load_tfds(name, split, looked_in=data_dir / _IMAGE_DATASETS[name])
    image_path = _standard_file(data_dir, image_file, f"{name} {split} images")
    label_path = _standard_file(data_dir, label_file, f"{name} {split} labels")
    images, labels = read_idx(image_path), read_idx(label_path)
    _check_same_count(images, labels, image_path, label_path)
    return images.astype("float32")[..., None] / 255.0, labels.astype("int32")


def _check_same_count(images, labels, image_path, label_path):
    """ValueError unless the image and label files hold as many examples as each other."""
    if len(images) != len(labels):
        raise ValueError(
            f"load_images: the image file {image_path} holds {len(images)} images but the label "
            f"file {label_path} holds {len(labels)} labels; they must hold one label per image "
            "(files of different splits or data sets?)."
        )


def _load_tfds(name, split, looked_in):
    import tensorflow_datasets as tfds

    try:
        # Batches concatenated here rather than batch_size=-1, which needs the split's size
        # from the dataset's metadata.
        batches = tfds.load(name, split=split, as_supervised=True).batch(10_000)
        images, labels = (np.concatenate(parts) for parts in zip(*tfds.as_numpy(batches)))
    except Exception as error:  # tfds raises many kinds when offline
        raise FileNotFoundError(
            f"{name} {split}: no local IDX files in {looked_in} and tensorflow-datasets could not "
            f"load it ({type(error).__name__}: {error}). Point data_dir= or ${DATA_DIR_ENV} at a "
            "folder with the IDX files."
        ) from error
    return images.astype("float32") / 255.0, labels.astype("int32")
