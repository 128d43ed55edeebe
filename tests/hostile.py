"""A corpus of hostile and broken inputs, made in a temporary folder: image files, names, links and
model files as an attacker (or bad luck) would hand them to vaedetect.

``build_image_corpus`` writes a folder of images to fit on and score; ``build_model_corpus`` writes
forged and broken model files from a good one. Each returns ``{path: what it is}`` for the bad entries,
so that a test can check that every one of them is reported. Run it alone to keep a copy to look at:
``python -m tests.hostile OUT_FOLDER MODEL``.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# A bomb just above PIL's MAX_IMAGE_PIXELS (89,478,485): 90.25 million RGBA pixels, about 360 MB
# decoded, in a file of a few hundred KB. The 13000 x 13000 ones took 4 GB before the fix.
BOMB_SIDE = 9500


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_bomb(path, side: int = BOMB_SIDE) -> None:
    """A valid ``side`` x ``side`` RGBA PNG of one colour, compressed row by row (never held whole)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" + bytes([40, 200, 90, 255]) * side
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data)
                           + _png_chunk(b"IEND", b""))


def _square(path, seed: int) -> None:
    rng = np.random.RandomState(seed)
    image = rng.randint(0, 40, size=(12, 12)).astype(np.uint8)
    image[3:9, 3:9] = 230
    Image.fromarray(image).save(path, format="PNG")


def build_image_corpus(root) -> dict[str, str]:
    """Write good images and every hostile entry under ``root``; return ``{bad entry: description}``.

    Good: 24 squares, plus valid images with a non-UTF-8 name, a 250-character name, an ANSI escape in
    the name, inside a folder named ``$\\foo$`` and behind a link that stays in the folder. Bad: broken,
    empty and truncated files, a PNG bomb, PostScript named ``.jpg``, HEIC and AVIF files, a folder
    named like an image, a link out of the folder, a dangling link and a named pipe.
    """
    root = Path(root)
    good = root / "good"
    good.mkdir(parents=True)
    for i in range(24):
        _square(good / f"img_{i:03d}.png", seed=i)
    _square(os.fsencode(root / "latin1-caf") + b"\xe9.png", seed=100)  # not UTF-8
    _square(root / ("long_" + "n" * 241 + ".png"), seed=101)  # 250 characters
    _square(root / "ansi-\x1b[31mred\x1b[0m.png", seed=102)
    (root / "$\\foo$").mkdir()
    _square(root / "$\\foo$" / "math.png", seed=103)
    os.symlink(good / "img_000.png", root / "link_inside.png")

    bad = {}
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    bad["broken.png"] = "cannot decode"
    (root / "empty.jpg").write_bytes(b"")
    bad["empty.jpg"] = "empty file"
    whole = (good / "img_001.png").read_bytes()
    (root / "truncated.png").write_bytes(whole[: len(whole) // 2])
    bad["truncated.png"] = "cannot decode"
    write_png_bomb(root / "bomb.png")
    bad["bomb.png"] = "decompression bomb"
    (root / "ghostscript.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    bad["ghostscript.jpg"] = "not an image file"
    (root / "photo.heic").write_bytes(os.urandom(256))
    bad["photo.heic"] = "is not decoded here"
    (root / "photo.avif").write_bytes(os.urandom(256))
    bad["photo.avif"] = "is not decoded here"
    (root / "folder.jpg").mkdir()
    _square(root / "folder.jpg" / "inside.png", seed=104)
    bad["folder.jpg"] = "a folder named like an image file"
    os.symlink("/", root / "escape")
    bad["escape"] = "symbolic link out of the folder"
    outside = root.parent / f"{root.name}-outside.png"
    _square(outside, seed=105)
    os.symlink(outside, root / "outside_link.png")
    bad["outside_link.png"] = "symbolic link out of the folder"
    os.symlink(root / "gone.png", root / "dangling.png")
    bad["dangling.png"] = "not a regular file"
    os.mkfifo(root / "pipe.png")
    bad["pipe.png"] = "not a regular file"
    return {str(root / name): reason for name, reason in bad.items()}


# ------------------------------------------------------------------ outputs


SPECIAL_OUTPUTS = ("fifo", "socket", "device", "link")


def make_special(kind: str, path) -> bool:
    """Put a ``kind`` of entry that is not a regular file at ``path`` (a named pipe, a Unix socket, a character
    device like /dev/null, or a link to a file beside it); False where this process cannot (devices: root only)."""
    import socket

    path = Path(path)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))  # the entry stays when the socket is closed
        server.close()
    elif kind == "device":
        if os.geteuid() != 0:
            return False
        os.mknod(path, 0o666 | __import__("stat").S_IFCHR, os.makedev(1, 3))  # as /dev/null
    else:
        (path.parent / f"{path.name}.target").write_bytes(b"keep me")
        os.symlink(path.parent / f"{path.name}.target", path)
    return True


def entry_kind(path) -> str:
    """What ``path`` is now, to check that nothing replaced it."""
    import stat

    mode = os.lstat(path).st_mode
    return next(name for test, name in ((stat.S_ISLNK, "link"), (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"),
                                        (stat.S_ISCHR, "device"), (stat.S_ISREG, "file")) if test(mode))


# ------------------------------------------------------------------ model files


def read_model_file(path) -> tuple[dict, dict]:
    """The vaedetect header and the tensors of a safetensors model file, read without any check."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as file:
        return json.loads(file.metadata()["vaedetect"]), {name: file.get_tensor(name) for name in file.keys()}


def write_model_file(path, header, tensors) -> None:
    """A safetensors model file of ``header`` (a dict, or text written as it is) and ``tensors``."""
    from safetensors.torch import save_file

    text = header if isinstance(header, str) else json.dumps(header)
    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, path, metadata={"vaedetect": text})


def rewrite(source, target, edit_header=None, edit_tensors=None) -> None:
    """``target``: the model file ``source`` with ``edit_header(header)`` (which may return a text to write
    instead) and ``edit_tensors(tensors)`` applied."""
    header, tensors = read_model_file(source)
    if edit_header is not None:
        edited = edit_header(header)
        header = edited if isinstance(edited, str) else header
    if edit_tensors is not None:
        edit_tensors(tensors)
    write_model_file(target, header, tensors)


def rewrite_format2(source, target, edit_header=None, edit_payload=None) -> None:
    """``target``: the format-2 file ``source`` (a ``torch.save`` archive) with its header or payload edited."""
    import torch

    payload = torch.load(source, map_location="cpu", weights_only=True)
    if edit_header is not None:
        header = json.loads(payload["header"])
        edited = edit_header(header)
        payload["header"] = edited if isinstance(edited, str) else json.dumps(header)
    if edit_payload is not None:
        edit_payload(payload)
    torch.save(payload, target)


def write_raw_safetensors(path, entries: dict, data: bytes, header_length=None) -> None:
    """A safetensors file whose JSON header is ``entries`` as given (offsets, dtypes and shapes unchecked)."""
    text = json.dumps(entries).encode()
    text += b" " * (-len(text) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(text) if header_length is None else header_length) + text + data)


def _set(*keys, value):
    def edit(header):
        section = header
        for key in keys[:-1]:
            section = section[key]
        section[keys[-1]] = value
    return edit


def _poison_first_weight(tensors):
    name = next(name for name in tensors if name.startswith("weights."))
    tensors[name].view(-1)[0] = float("nan")


def _zip_bomb(path, size: int = 256 * 2**20) -> None:
    """A zip whose one deflated record expands to ``size`` bytes (256 MiB in about 256 KB)."""
    chunk = bytes(2**20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data.pkl", "w", force_zip64=True) as record:
            for _ in range(size // len(chunk)):
                record.write(chunk)


def _forged_structures(root: Path) -> dict[str, str]:
    """Safetensors files whose own structure lies: the parser must refuse them before allocating anything."""
    scores = np.arange(4, dtype=np.float64).tobytes()
    entry = {"__metadata__": {"vaedetect": "{}"}, "calibration.scores": {"dtype": "F64", "shape": [4],
                                                                          "data_offsets": [0, 32]}}
    cases = {
        "header_past_end.vae": (entry, scores, 10**6, "invalid header length"),
        "overlap.vae": ({**entry, "other": {"dtype": "F64", "shape": [4], "data_offsets": [8, 40]}}, scores + bytes(8),
                        None, "invalid offset"),
        "dtype_mismatch.vae": ({**entry, "calibration.scores": {"dtype": "F64", "shape": [8], "data_offsets": [0, 32]}},
                               scores, None, "invalid shape, data type, or offset"),
        "tensor_2e40.vae": ({**entry, "calibration.scores": {"dtype": "F64", "shape": [2**40], "data_offsets": [0, 32]}},
                            scores, None, "invalid shape, data type, or offset"),
    }
    expected = {}
    for name, (entries, data, length, message) in cases.items():
        write_raw_safetensors(root / name, entries, data, length)
        expected[str(root / name)] = message
    return expected


def build_model_corpus(root, model) -> dict[str, str]:
    """Write broken and forged versions of the good model file ``model`` (of images) under ``root``.

    Returns ``{path: a part of the one-line message its refusal gives}``.
    """
    import torch

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fitted = ("fitted",)
    cases = {
        "nan_weights.vae": (dict(edit_tensors=_poison_first_weight), "NaN or infinite"),
        "nan_calibration.vae": (dict(edit_tensors=lambda t: t["calibration.scores"].fill_(float("nan"))),
                                "NaN or infinite"),
        "nan_offset.vae": (dict(edit_header=_set(*fitted, "calibration", "offset", value=float("nan"))), "Got nan"),
        "text_offset.vae": (dict(edit_header=_set(*fitted, "calibration", "offset", value="low")), "Got 'low'"),
        "stages50.vae": (dict(edit_header=_set(*fitted, "network", "n_stages", value=50)), "range [1, 8]. Got 50"),
        "param_stages50.vae": (dict(edit_header=_set("params", "n_stages", value=50)), "range [1, 8]. Got 50"),
        "latent1e12.vae": (dict(edit_header=_set(*fitted, "network", "latent_dim", value=10**12)),
                           "range [1, 4096]"),
        "wide.vae": (dict(edit_header=_set(*fitted, "network", "latent_dim", value=64)), "do not match the architecture"),
        "draws1e9.vae": (dict(edit_header=_set(*fitted, "settings", "n_samples", value=10**9)), "range [1, 10000]"),
        "members1e6.vae": (dict(edit_header=_set(*fitted, "network", "members", value=10**6)), "range [1, 64]"),
        "image_members.vae": (dict(edit_header=lambda h: (h["fitted"]["network"].update(members=2),
                                                          h["fitted"]["settings"].update(n_estimators=2)) and None),
                              "Members side by side are for tabular networks"),
        "residual_shape.vae": (dict(edit_tensors=lambda t: t.__setitem__("reference.residual_precision", torch.eye(3))),
                               "tensor 'reference.residual_precision' has shape"),
        "int_scores.vae": (dict(edit_tensors=lambda t: t.__setitem__("calibration.scores", torch.arange(5))),
                           "tensor 'calibration.scores' is missing or not a floating-point tensor"),
        "float64_weights.vae": (dict(edit_tensors=lambda t: t.update({k: v.double() for k, v in t.items()
                                                                      if k.startswith("weights.") and v.is_floating_point()})),
                                "do not match the architecture"),
        "param_draws1e9.vae": (dict(edit_header=_set("params", "n_samples", value=10**9)), "range [1, 10000]"),
        "unknown_param.vae": (dict(edit_header=_set("params", "evil", value=1)), "unknown parameter"),
        "unknown_field.vae": (dict(edit_header=_set(*fitted, "evil", value=1)), "unknown field(s) ['evil']"),
        "meta_device.vae": (dict(edit_header=_set("params", "device", value="meta")), "Got 'meta'"),
        "missing_keys.vae": (dict(edit_header=lambda h: h.pop("fitted") and None), "lacks ['fitted']"),
        "list_header.vae": (dict(edit_header=lambda h: "[1, 2, 3]"), "format 'list'"),
        "deep_header.vae": (dict(edit_header=lambda h: "[" * 200_000 + "]" * 200_000), "nested too deeply"),
        "huge_image.vae": (dict(edit_header=_set(*fitted, "modality", "layout", "shape", value=[3, 10**6, 10**6])),
                           "sides in"),
    }
    expected = {}
    for name, (edits, message) in cases.items():
        rewrite(model, root / name, **edits)
        expected[str(root / name)] = message
    expected.update(_forged_structures(root))
    _zip_bomb(root / "zip_bomb.vae")
    expected[str(root / "zip_bomb.vae")] = "decompression bomb"
    (root / "random.vae").write_bytes(np.random.RandomState(0).bytes(4096))
    expected[str(root / "random.vae")] = "not a readable vaedetect model"

    class RunsCode:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    torch.save({"header": RunsCode()}, root / "pickle.vae")
    expected[str(root / "pickle.vae")] = "refused without running them"
    return expected


if __name__ == "__main__":
    import sys

    out, model = Path(sys.argv[1]), sys.argv[2]
    for path, reason in {**build_image_corpus(out / "images"), **build_model_corpus(out / "models", model)}.items():
        print(f"{path}: {reason}")
