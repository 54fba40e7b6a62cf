"""Data sets of the seed studies: two moons, egg boiling times, MNIST and Fashion-MNIST.

Images load through `tensorflow-datasets` when it can reach its source, and from local IDX
files otherwise. The local directory is `data_dir=`, else `$TFBDL_DATA_DIR`, else
`../shared/data` beside the project; it holds `mnist/` and `fashion-mnist/` with the usual
`*-idx?-ubyte.gz` files and `egg-times/egg_times.csv`.
"""

import gzip
import os
import pathlib

import numpy as np

DATA_DIR_ENV = "TFBDL_DATA_DIR"
_PROJECT_DATA_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IMAGE_DATASETS = {"mnist": "mnist", "fashion_mnist": "fashion-mnist"}


def resolve_data_dir(data_dir=None):
    """The local data directory: the argument, else $TFBDL_DATA_DIR, else ../shared/data."""
    return pathlib.Path(data_dir or os.environ.get(DATA_DIR_ENV) or _PROJECT_DATA_DIR)


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

    path = resolve_data_dir(data_dir) / "egg-times" / "egg_times.csv"
    _require(path, "the egg boiling times CSV")
    frame = pd.read_csv(path, index_col=0)
    return frame[["weight", "time"]].to_numpy("float32"), frame["outcome"].to_numpy("int32")


def _require(path, what):
    if not path.exists():
        raise FileNotFoundError(
            f"{what} not found: looked for {path}. Put the file there, pass data_dir=..., "
            f"or set ${DATA_DIR_ENV} to the folder that holds it (see ../shared/data/README.md)."
        )


def read_idx(path):
    """Reads a (gzipped) IDX file into a uint8 array (LeCun's MNIST format)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        header = f.read(4)
        if header[:2] != b"\x00\x00" or header[2] != 0x08:
            raise ValueError(f"read_idx: {path} is not an unsigned-byte IDX file (header {header!r}).")
        ndim = header[3]
        shape = tuple(int.from_bytes(f.read(4), "big") for _ in range(ndim))
        data = np.frombuffer(f.read(), dtype=np.uint8)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"read_idx: {path} holds {data.size} bytes of data, expected shape {shape}.")
    return data.reshape(shape)


def load_images(name, split="train", data_dir=None, source="auto"):
    """MNIST or Fashion-MNIST as (images float32 in [0, 1] of shape (n, 28, 28, 1), labels int32).

    Args:
        name: "mnist" or "fashion_mnist".
        split: "train" or "test".
        data_dir: local folder with the IDX files (see the module docstring).
        source: "local" (IDX files), "tfds" (tensorflow-datasets), or "auto": local files
            when present, else tensorflow-datasets.
    """
    if name not in _IMAGE_DATASETS:
        raise ValueError(f"load_images: `name` must be one of {sorted(_IMAGE_DATASETS)}, got name={name!r}.")
    if split not in _IDX_FILES:
        raise ValueError(f"load_images: `split` must be 'train' or 'test', got split={split!r}.")
    if source not in ("auto", "local", "tfds"):
        raise ValueError(f"load_images: `source` must be 'auto', 'local' or 'tfds', got source={source!r}.")
    folder = resolve_data_dir(data_dir) / _IMAGE_DATASETS[name]
    image_file, label_file = (folder / f for f in _IDX_FILES[split])
    if source == "tfds" or (source == "auto" and not image_file.exists()):
        return _load_tfds(name, split, looked_in=folder)
    _require(image_file, f"{name} {split} images")
    _require(label_file, f"{name} {split} labels")
    images = read_idx(image_file).astype("float32")[..., None] / 255.0
    return images, read_idx(label_file).astype("int32")


def _load_tfds(name, split, looked_in):
    import tensorflow_datasets as tfds

    try:
        images, labels = tfds.as_numpy(tfds.load(name, split=split, batch_size=-1, as_supervised=True))
    except Exception as error:  # tfds raises many kinds when offline
        raise FileNotFoundError(
            f"{name} {split}: no local IDX files in {looked_in} and tensorflow-datasets could not "
            f"load it ({type(error).__name__}: {error}). Point data_dir= or ${DATA_DIR_ENV} at a "
            "folder with the IDX files."
        ) from error
    return images.astype("float32") / 255.0, labels.astype("int32")
