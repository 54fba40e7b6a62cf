"""Saving that never loses what was saved before: write beside the target, then rename.

`keras.Model.save` writes straight into the target path, so a save that fails half-way
(a full disk, an object that cannot be serialized) leaves a truncated file where a good one
was. `save_model` writes to a temporary file in the same folder and renames it onto the
target only when the write succeeded: the rename is atomic, so the path holds either the
old file or the new one, never a mix. `tfbdl.plots` (`path=`) and tfbdl's examples write their
figures, metrics and models through `atomic_path` too.
"""

import os
import pathlib
import tempfile

__all__ = ["atomic_path", "save_model"]


def atomic_path(path, write):
    """Calls `write(temporary_path)`, then renames the temporary file onto `path`.

    The temporary file sits in the same folder (a rename there is atomic) and keeps the
    suffix, so writers that infer the format from it (Keras, matplotlib) still work. On
    failure the temporary file is removed, `path` is left as it was, and the error raised.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, _permissions(path))  # mkstemp makes it private (0600)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def _permissions(path):
    """The mode `path` has, or a new file would get (0666 less the umask)."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def save_model(model, path, **kwargs):
    """`model.save(path, **kwargs)`, atomically: a failed save leaves the previous file intact.

        tfbdl.save_model(model, "m.keras")
        model = keras.saving.load_model("m.keras")
    """
    if not str(path).endswith(".keras"):
        raise ValueError(f"save_model: `path` must end in '.keras' (Keras' format), got path={str(path)!r}.")
    return atomic_path(path, lambda temporary: model.save(temporary, **kwargs))
