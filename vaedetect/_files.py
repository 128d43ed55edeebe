"""Files written and names shown: output paths checked before the work, written so that a crash or
Ctrl-C never leaves half a file, and file names turned into text that any format and terminal takes.

Torch-free, so that the command line can check its output paths before importing anything heavy.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

# C0 and C1 control characters (ANSI escape sequences start with ESC) and the Unicode marks that
# reorder text on screen: a file name holding them must not drive the terminal it is printed on.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def as_text(value) -> str:
    """``value`` (a path or a message naming one) as valid Unicode text.

    Python holds the bytes of a file name that are not UTF-8 as lone surrogates (``os.fsdecode``),
    which UTF-8 files (CSV, JSON, Parquet, HTML) cannot store; each such byte becomes ``\\xNN``.

    Examples
    --------
    >>> as_text(os.fsdecode(b"x\\xff.png"))
    'x\\\\xff.png'
    """
    text = os.fsdecode(value) if isinstance(value, bytes) else str(value)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that did not come from a file name
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def printable(value) -> str:
    """:func:`as_text` with control characters shown as ``\\xNN``, safe to print on a terminal.

    Examples
    --------
    >>> printable("evil\\x1b[2J.png")
    'evil\\\\x1b[2J.png'
    """
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", as_text(value))


def map_name(path) -> str:
    """The file name of ``path``'s heat-map overlay: its stem reduced to at most 64 safe characters
    (any name, however long or strange, gives a valid file name) and a digest of the whole path, which
    keeps same-named files from different folders apart.

    Examples
    --------
    >>> map_name("photos/a b.png")
    'a_b-292db66e.png'
    """
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(path).stem)[:64].lstrip(".") or "image"
    return f"{stem}-{hashlib.sha1(os.fsencode(path)).hexdigest()[:8]}.png"


def same_file(path, others) -> str | None:
    """The first of ``others`` that is the file at ``path`` (same inode: links included), or None."""
    try:
        target = os.stat(path)
    except OSError:
        return None  # nothing there yet, so nothing to overwrite
    for other in others:
        try:
            if os.path.samestat(target, os.stat(other)):
                return str(other)
        except OSError:
            continue
    return None


def check_output_file(path, *, what: str, suffixes=None, protected=()) -> Path:
    """Refuse, before any work, an output path that cannot or must not be written.

    Parameters
    ----------
    path : path-like
    what : str
        Names the option or argument in messages (e.g. ``"-o"``).
    suffixes : sequence of str, optional
        Allowed extensions (lower case, with the dot).
    protected : iterable of path-like
        Files that must not be overwritten: the inputs and the model in use.

    Raises
    ------
    ValueError
        Naming ``what``, the path and the problem: an unknown extension, a folder, a symbolic link, an
        existing entry that is not a regular file (a device, a pipe, a socket), a folder that is missing or
        not writable, or one of ``protected``.
    """
    path = Path(path)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise ValueError(f"{what} {printable(path)!r}: unknown extension {printable(path.suffix)!r}; "
                         f"use {', '.join(suffixes)}.")
    if path.is_symlink():  # writing replaces the link itself, not what it points to
        raise ValueError(f"{what} {printable(path)!r} is a symbolic link (to {printable(os.readlink(path))!r}); "
                         "writing would replace the link: give its target, or another name.")
    if path.is_dir():
        raise ValueError(f"{what} {printable(path)!r} is a folder; give a file name.")
    if path.exists() and not path.is_file():
        raise ValueError(f"{what} {printable(path)!r} exists and is not a regular file (a device, a pipe or a "
                         "socket), which vaedetect never replaces; write elsewhere.")
    check_output_folder(path.parent, what=what, create=False)
    clash = same_file(path, protected)
    if clash is not None:
        raise ValueError(f"{what} {printable(path)!r} would overwrite {printable(clash)!r}, an input of this "
                         "command; write elsewhere.")
    return path


def check_output_folder(folder, *, what: str, create: bool = True) -> Path:
    """Make sure ``folder`` exists (created when ``create`` and its parent exists) and is writable."""
    folder = Path(folder) if str(folder) else Path(".")
    if create and not folder.exists() and folder.parent.is_dir():
        try:
            folder.mkdir()
        except OSError as error:
            raise ValueError(f"{what}: cannot create folder {printable(folder)!r}: {error.strerror}.") from None
    if not folder.is_dir():
        raise ValueError(f"{what}: folder {printable(folder)!r} does not exist.")
    try:  # the only test that answers for every file system, permission and mount option
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"{what}: cannot write in folder {printable(folder)!r}: {error.strerror}.") from None
    return folder


# A torch.save archive holds a record per tensor: far fewer than this.
_MAX_RECORDS = 10_000


def load_torch_file(path, what: str):
    """``torch.load(path, weights_only=True)`` of a file handed to vaedetect (a model file of format 2, backbone
    weights), refused with a ValueError naming ``what`` and the file unless it is a regular file that torch reads
    without running code: a ``torch.save`` archive whose records are stored uncompressed and fit in the file (so
    that reading it takes no more memory than its size), or a file of torch's older format, which compresses
    nothing (EfficientNet-Lite0's weights come so)."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():  # a pipe would block the reader, a device never end
        raise ValueError(f"{what} {printable(path)!r} is not a regular file.")
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        records = []  # torch's older format, or not a torch file at all, which torch.load refuses
    if len(records) > _MAX_RECORDS:
        raise ValueError(f"{what} {printable(path)!r} is not a torch.save archive: it holds {len(records)} records.")
    compressed = [r.filename for r in records if r.compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise ValueError(f"{what} {printable(path)!r}: record {compressed[0]!r} is compressed, which torch.save never "
                         "does (refused as a possible decompression bomb).")
    claimed, size = sum(r.file_size for r in records), path.stat().st_size
    if claimed > size:
        raise ValueError(f"{what} {printable(path)!r}: its records claim {claimed} bytes in a file of {size}.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{what} {printable(path)!r} is not readable: it holds Python objects other than tensors, "
                         "numbers and strings, refused without running them.") from None
    except Exception as error:  # truncated zip, random bytes...
        raise ValueError(f"{what} {printable(path)!r} is not readable (truncated, or of another format): "
                         f"{' '.join(str(error).split())}") from None


class Terminated(BaseException):
    """SIGTERM, raised in the main thread by the command line's handler so that outputs in progress are removed
    as on Ctrl-C."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(path, write) -> None:
    """Call ``write(temporary_path)`` beside ``path``, then rename the result onto ``path``.

    The file ends up with the permissions a plain ``open`` would give it (``mkstemp`` makes
    temporary files readable by their owner only). Whatever stops the writing (an error, Ctrl-C, and
    SIGTERM under the command line, which raises :class:`Terminated`) removes the temporary file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:64]}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
