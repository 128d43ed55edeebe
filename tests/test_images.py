import os

import numpy as np
import pytest
from PIL import Image

from vaedetect.images import discover_images, load_image, load_images, stream_images


def _rgb(size=(20, 12), colour=(200, 30, 30)):
    return Image.new("RGB", size, colour)


@pytest.fixture
def folder(tmp_path):
    """A folder of small images in many modes, plus files that must be skipped or ignored."""
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    _rgb().save(tmp_path / "a.jpg")
    _rgb().save(tmp_path / "B.PNG")
    _rgb().convert("L").save(tmp_path / "sub" / "gray.png")
    _rgb().convert("RGBA").save(tmp_path / "sub" / "rgba.png")
    _rgb().convert("P").save(tmp_path / "sub" / "palette.gif")
    _rgb().convert("CMYK").save(tmp_path / "sub" / "cmyk.jpg")
    Image.fromarray(np.full((12, 20), 40000, dtype=np.uint16)).save(tmp_path / "sub" / "deeper" / "sixteen.png")
    _rgb().save(tmp_path / "sub" / "deeper" / "c.webp")
    _rgb().save(tmp_path / "sub" / "deeper" / "d.tiff")
    (tmp_path / "notes.txt").write_text("not an image, and not an image extension")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "fake.jpg").write_text("this is text")
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return tmp_path


def test_discovery_is_recursive_sorted_and_case_insensitive(folder):
    files, unreadable = discover_images(folder)
    names = [os.path.relpath(f, folder) for f in files]
    assert names == sorted(names)
    assert "B.PNG" in names and os.path.join("sub", "deeper", "c.webp") in names
    assert "notes.txt" not in names
    assert len(files) == 12 and unreadable == []


def test_discovery_survives_a_symlink_loop(folder):
    os.symlink(folder, folder / "sub" / "loop")
    files, _ = discover_images(folder)
    # the link points back at a folder already walked, so it is not entered: each file once
    assert len(files) == 12
    assert len({os.path.realpath(f) for f in files}) == 12


def test_discovery_takes_single_files_and_names_missing_paths(folder):
    files, _ = discover_images([folder / "a.jpg", folder / "notes.txt"])
    assert [os.path.basename(f) for f in files] == ["a.jpg", "notes.txt"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        discover_images(folder / "nowhere")


@pytest.mark.parametrize("name", ["a.jpg", "B.PNG", "sub/gray.png", "sub/rgba.png", "sub/palette.gif",
                                  "sub/cmyk.jpg", "sub/deeper/sixteen.png", "sub/deeper/c.webp", "sub/deeper/d.tiff"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_mode_decodes_to_the_model_shape(folder, name, channels):
    image = load_image(folder / name, image_size=8, channels=channels)
    assert image.shape == (8, 8, channels) and image.dtype == np.uint8


def test_red_stays_red_and_sixteen_bit_is_rescaled_not_clipped(folder):
    red = load_image(folder / "a.jpg", 8, 3)
    assert red[..., 0].mean() > 150 and red[..., 1].mean() < 80
    # a constant 16-bit image has no range to rescale: it maps to black, not to a clipped 255
    assert load_image(folder / "sub" / "deeper" / "sixteen.png", 8, 1).max() == 0


def test_transparent_pixels_become_white(tmp_path):
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert load_image(tmp_path / "clear.png", 8, 3).min() == 255


def test_short_side_is_resized_and_centre_cropped(tmp_path):
    # left third black, middle white, right third black: the centre crop of a 30x10 image is white
    array = np.zeros((10, 30), dtype=np.uint8)
    array[:, 10:20] = 255
    Image.fromarray(array).save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png", 10, 1)
    assert image.shape == (10, 10, 1) and image.min() > 200


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((10, 20, 3), dtype=np.uint8)
    array[:, :10] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    Image.fromarray(array).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    image = load_image(tmp_path / "rotated.jpg", 10, 1)[..., 0]
    # after the rotation the white half is on top, not on the left
    assert image[:3].mean() > 200 and image[-3:].mean() < 50


def test_large_jpeg_is_decoded_through_draft_mode(tmp_path):
    _rgb((2000, 1500)).save(tmp_path / "big.jpg")
    with Image.open(tmp_path / "big.jpg") as image:
        image.draft("RGB", (16, 16))
        assert max(image.size) <= 2000 // 8  # JPEG decodes at 1/8 scale in the DCT
    assert load_image(tmp_path / "big.jpg", 16, 3).shape == (16, 16, 3)


@pytest.mark.parametrize("name, reason", [("empty.png", "empty file"), ("fake.jpg", "not an image"),
                                          ("truncated.jpg", "cannot decode")])
def test_bad_files_raise_with_a_reason(folder, name, reason):
    with pytest.raises(ValueError, match=reason):
        load_image(folder / name, 8, 3)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    _rgb((100, 100)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 100x100 > 2 * 1000 pixels
    with pytest.raises(ValueError, match="decompression bomb"):
        load_image(tmp_path / "bomb.png", 8, 3)


@pytest.mark.parametrize("workers", [0, 2])
def test_loading_skips_and_reports_bad_files_keeping_the_rest(folder, workers):
    files, _ = discover_images(folder)
    images, used, skipped = load_images(files, 8, 3, num_workers=workers, batch_size=4)
    assert images.shape == (9, 8, 8, 3)
    assert len(used) == 9
    assert sorted(os.path.basename(s.path) for s in skipped) == ["empty.png", "fake.jpg", "truncated.jpg"]
    assert all(s.reason for s in skipped)


def test_streaming_keeps_order_and_batch_size(folder):
    files, _ = discover_images(folder)
    batches = list(stream_images(files, 8, 1, batch_size=5))
    assert [len(b.paths) + len(b.skipped) for b in batches] == [5, 5, 2]
    good = [p for b in batches for p in b.paths]
    assert good == [f for f in files if f in good]


def test_pipes_and_broken_links_are_reported_not_opened(folder):
    os.mkfifo(folder / "pipe.png")  # opening it for reading would block forever
    os.symlink(folder / "gone.jpg", folder / "ghost.jpg")
    files, unreadable = discover_images(folder)
    assert len(files) == 12
    assert sorted(os.path.basename(s.path) for s in unreadable) == ["ghost.jpg", "pipe.png"]
    assert all("not a regular file" in s.reason for s in unreadable)


@pytest.mark.parametrize("n_jobs", [-1, 1.5, True])
def test_a_number_of_decoding_processes_that_is_not_one_is_refused_by_name(tmp_path, n_jobs):
    from vaedetect.images import load_images

    with pytest.raises(ValueError, match=r"n_jobs \(worker processes decoding images"):
        load_images([tmp_path / "x.png"], 8, 1, num_workers=n_jobs)
