"""Uploads becoming datasets (core/uploads/materialize.py): ImageFolder archives in both
layouts and .npz, decoded to uint8 tensors and validated. Archives are built in tmp_path;
no database."""
from __future__ import annotations

import io
import pickle
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.uploads.archives import Limits, UploadRejected
from core.uploads.image_folder import _stratified_split
from core.uploads.materialize import UploadOptions, check_headers, materialize
from tests.images import crafted_png
from tests.unit import factories

MB = 2**20
LIMITS = Limits(max_entries=10_000, max_unpacked_bytes=64 * MB, max_image_pixels=1_000_000)


# ---- helpers ---------------------------------------------------------------------------------

def encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None, **kwargs) -> bytes:
    """HWC (RGB) or HW (grayscale) array -> image bytes."""
    buf = io.BytesIO()
    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def pattern(seed: int, h: int = 5, w: int = 4, channels: int = 3) -> np.ndarray:
    """A distinct uint8 image (HWC or HW) for each seed."""
    values = (np.arange(h * w * channels, dtype=np.int64) * 7 + seed * 31) % 256
    shape = (h, w, channels) if channels == 3 else (h, w)
    return values.reshape(shape).astype(np.uint8)


def chw(array: np.ndarray) -> np.ndarray:
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    return factories.write_zip(path, files, zipfile.ZIP_DEFLATED)


def write_tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    return factories.write_tar(path, files, mode)


def rejected(path: Path, options: UploadOptions | None = None, limits: Limits = LIMITS) -> str:
    with pytest.raises(UploadRejected) as info:
        materialize(path, options or UploadOptions(), limits)
    return str(info.value)


def pairs(split) -> list[tuple[int, bytes]]:
    """(label, image bytes) for each image of a split, sorted: order-free comparison."""
    return sorted((int(label), image.numpy().tobytes())
                  for image, label in zip(split.images, split.labels))


def two_class_folder(fmt: str = "PNG", **kwargs) -> dict[str, bytes]:
    return {f"{c}/{i}.png": encode(pattern(10 * k + i), fmt, **kwargs)
            for k, c in enumerate(("cat", "dog")) for i in range(3)}


# ---- split layout ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["zip", "tar.gz", "tar"])
def test_split_layout_with_a_common_top_folder(tmp_path, fmt):
    counts = {("train", "dog"): 3, ("train", "cat"): 2, ("train", "bird"): 4,
              ("test", "dog"): 1, ("test", "cat"): 2, ("test", "bird"): 1}
    classes = ["bird", "cat", "dog"]  # sorted, whatever the archive order
    files, expected = {}, {"train": [], "test": []}
    seed = 0
    for (split, cls), n in counts.items():
        for i in range(n):
            seed += 1
            image = pattern(seed)
            files[f"cifar10/{split}/{cls}/img{i}.png"] = encode(image)
            expected[split].append((classes.index(cls), chw(image).tobytes()))
    path = (write_zip(tmp_path / "d.zip", files) if fmt == "zip"
            else write_tar(tmp_path / f"d.{fmt}", files, "w:gz" if fmt == "tar.gz" else "w"))
    result = materialize(path, UploadOptions(), LIMITS)
    assert result.layout == "split"
    assert result.classes == classes
    assert result.skipped == 0
    for split in (result.train, result.test):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert tuple(split.images.shape[1:]) == (3, 5, 4)
        assert split.images.is_contiguous()  # NCHW in memory, as training reads it
    assert (len(result.train), len(result.test)) == (9, 4)
    assert torch.bincount(result.train.labels).tolist() == [4, 2, 3]
    assert torch.bincount(result.test.labels, minlength=3).tolist() == [1, 2, 1]
    # every image decoded to exactly its pixels, under its own folder's label
    assert pairs(result.train) == sorted(expected["train"])
    assert pairs(result.test) == sorted(expected["test"])


def test_a_readme_beside_train_and_test_is_skipped(tmp_path):
    files = {f"{s}/{c}/{i}.png": encode(pattern(i)) for s in ("train", "test")
             for c in ("cat", "dog") for i in range(2)}
    files["README.txt"] = b"my dataset"
    files["LICENSE"] = b"CC0"
    result = materialize(write_zip(tmp_path / "d.zip", files), UploadOptions(), LIMITS)
    assert result.layout == "split" and result.classes == ["cat", "dog"]
    assert result.skipped == 2
    assert (len(result.train), len(result.test)) == (4, 4)


@pytest.mark.parametrize("readme", ["cifar10/README.txt", "README.txt"])
def test_a_readme_with_a_common_top_folder_is_skipped(tmp_path, readme):
    files = {f"cifar10/{s}/{c}/{i}.png": encode(pattern(i)) for s in ("train", "test")
             for c in ("cat", "dog") for i in range(2)}
    files[readme] = b"my dataset"
    result = materialize(write_zip(tmp_path / "d.zip", files), UploadOptions(), LIMITS)
    assert result.layout == "split" and result.classes == ["cat", "dog"]
    assert result.skipped == 1


def test_test_class_missing_from_train_is_rejected(tmp_path):
    files = {f"train/{c}/{i}.png": encode(pattern(i)) for c in ("cat", "dog") for i in range(2)}
    files.update({f"test/{c}/0.png": encode(pattern(0)) for c in ("cat", "bird")})
    message = rejected(write_zip(tmp_path / "d.zip", files))
    assert "bird" in message and "test" in message


def test_train_class_missing_from_test_is_fine(tmp_path):
    files = {f"train/{c}/{i}.png": encode(pattern(i)) for c in ("cat", "dog") for i in range(2)}
    files["test/cat/0.png"] = encode(pattern(9))
    result = materialize(write_zip(tmp_path / "d.zip", files), UploadOptions(), LIMITS)
    assert result.classes == ["cat", "dog"] and result.test.labels.tolist() == [0]


@pytest.mark.parametrize("bad", ["train/cat/sub/x.png", "train/x.png/extra/deep.png",
                                 "valid/cat/x.png"])
def test_unexpected_nesting_in_split_layout_is_rejected(tmp_path, bad):
    files = {f"{s}/{c}/{i}.png": encode(pattern(i)) for s in ("train", "test")
             for c in ("cat", "dog") for i in range(2)}
    files[bad] = encode(pattern(5))
    message = rejected(write_zip(tmp_path / "d.zip", files))
    assert repr(bad) in message and "train/<class>/<image>" in message


def test_unexpected_nesting_in_single_layout_is_rejected(tmp_path):
    files = two_class_folder()
    files["cat/sub/x.png"] = encode(pattern(5))
    message = rejected(write_zip(tmp_path / "d.zip", files))
    assert "'cat/sub/x.png'" in message and "<class>/<image>" in message


def test_only_a_train_folder_is_rejected(tmp_path):
    files = {f"train/{c}/{i}.png": encode(pattern(i)) for c in ("cat", "dog") for i in range(2)}
    assert "test" in rejected(write_zip(tmp_path / "d.zip", files))


# ---- single layout ---------------------------------------------------------------------------

def single_layout_files() -> dict[str, bytes]:
    sizes = {"apple": 8, "banana": 4, "cherry": 2, "date": 1}
    return {f"fruit/{c}/{c}{i}.png": encode(pattern(100 * k + i))
            for k, (c, n) in enumerate(sizes.items()) for i in range(n)}


def test_single_layout_is_split_per_class_and_reproducibly(tmp_path):
    files = single_layout_files()
    options = UploadOptions(test_fraction=0.25)
    first = materialize(write_zip(tmp_path / "a.zip", files), options, LIMITS)
    second = materialize(write_tar(tmp_path / "b.tar.gz", files), options, LIMITS)
    assert first.layout == "single"
    assert first.classes == ["apple", "banana", "cherry", "date"]
    # round(n * 0.25) per class, at least 1 when a class has 2+ images, never all of them
    assert torch.bincount(first.test.labels, minlength=4).tolist() == [2, 1, 1, 0]
    assert torch.bincount(first.train.labels, minlength=4).tolist() == [6, 3, 1, 1]
    # the same images land in the same split, every time
    assert pairs(first.train) == pairs(second.train)
    assert pairs(first.test) == pairs(second.test)
    again = materialize(tmp_path / "a.zip", options, LIMITS)
    assert torch.equal(again.test.images, first.test.images)
    assert torch.equal(again.test.labels, first.test.labels)
    # and every image is in exactly one split, under its folder's label
    expected = sorted((k, chw(pattern(100 * k + i)).tobytes())
                      for k, n in enumerate((8, 4, 2, 1)) for i in range(n))
    assert sorted(pairs(first.train) + pairs(first.test)) == expected


def test_stratified_split_gives_each_class_with_two_images_a_test_image():
    labels = [c for c, n in (("a", 2), ("b", 3), ("c", 20), ("d", 1)) for _ in range(n)]
    for fraction in (0.01, 0.1, 0.25, 0.5, 0.99):
        splits = _stratified_split(labels, fraction)
        assert splits == _stratified_split(labels, fraction)
        for cls in "abc":
            chosen = [s for s, c in zip(splits, labels) if c == cls]
            assert "test" in chosen and "train" in chosen
        assert splits[labels.index("d")] == "train"


def test_single_layout_needs_two_images_in_some_class(tmp_path):
    files = {"cat/0.png": encode(pattern(0)), "dog/0.png": encode(pattern(1))}
    assert "test" in rejected(write_zip(tmp_path / "d.zip", files))


def test_macos_debris_is_ignored(tmp_path):
    files = two_class_folder()
    files[".DS_Store"] = b"\x00\x00\x00\x01Bud1 not an image"
    files["cat/.DS_Store"] = b"\x00\x00\x00\x01Bud1 not an image"
    files["__MACOSX/cat/._0.png"] = b"\x00\x05\x16\x07 AppleDouble"
    files["__MACOSX/._cat"] = b"\x00\x05\x16\x07 AppleDouble"
    result = materialize(write_zip(tmp_path / "d.zip", files), UploadOptions(test_fraction=0.34),
                         LIMITS)
    assert result.layout == "single" and result.classes == ["cat", "dog"]
    assert len(result.train) + len(result.test) == 6
    assert result.skipped == 0


def test_jpeg_and_png_mixed_in_one_dataset(tmp_path):
    flat = {"cat": (200, 30, 40), "dog": (20, 180, 90)}
    files = {}
    for cls, color in flat.items():
        image = np.zeros((8, 8, 3), np.uint8)
        image[:] = color
        files[f"{cls}/a.png"] = encode(image)
        files[f"{cls}/b.jpg"] = encode(image, "JPEG", quality=95)
    result = materialize(write_zip(tmp_path / "d.zip", files), UploadOptions(test_fraction=0.5),
                         LIMITS)
    images = torch.cat([result.train.images, result.test.images])
    labels = torch.cat([result.train.labels, result.test.labels])
    assert tuple(images.shape) == (4, 3, 8, 8)
    for image, label in zip(images, labels):
        color = torch.tensor(flat[result.classes[label]], dtype=torch.int16).view(3, 1, 1)
        assert (image.to(torch.int16) - color).abs().max() <= 3


# ---- validation --------------------------------------------------------------------------------

def test_an_undecodable_image_is_rejected_by_name(tmp_path):
    files = two_class_folder()
    files["dog/x.png"] = b"\x89PNG\r\n\x1a\n but then garbage"
    message = rejected(write_zip(tmp_path / "d.zip", files))
    assert "dog/x.png" in message and "decodable" in message


def test_a_truncated_image_is_rejected_by_name(tmp_path):
    files = two_class_folder()
    good = encode(pattern(3, h=40, w=40))
    files["dog/cut.png"] = good[: len(good) // 2]
    assert "dog/cut.png" in rejected(write_zip(tmp_path / "d.zip", files))


@pytest.mark.parametrize("layout", ["single", "split"])
def test_one_class_only_is_rejected(tmp_path, layout):
    if layout == "single":
        files = {f"cat/{i}.png": encode(pattern(i)) for i in range(4)}
    else:
        files = {f"{s}/cat/{i}.png": encode(pattern(i)) for s in ("train", "test") for i in range(2)}
    message = rejected(write_zip(tmp_path / "d.zip", files))
    assert "at least 2 classes" in message


def test_an_archive_with_no_images_is_rejected(tmp_path):
    files = {".DS_Store": b"x", "__MACOSX/._a": b"x"}
    assert "no images" in rejected(write_zip(tmp_path / "d.zip", files))


def test_mixed_sizes_are_rejected_naming_both_files(tmp_path):
    files = two_class_folder()  # 5x4 images
    files["dog/big.png"] = encode(pattern(1, h=6, w=7))
    message = rejected(write_zip(tmp_path / "d.zip", files))
    assert "dog/big.png" in message and "cat/0.png" in message
    assert "7x6" in message and "4x5" in message
    assert "resize" in message


def test_mixed_sizes_pass_with_a_declared_resize(tmp_path):
    files = two_class_folder()
    files["dog/big.png"] = encode(pattern(1, h=30, w=20))
    files["dog/small.png"] = encode(pattern(2, h=3, w=3))
    result = materialize(write_zip(tmp_path / "d.zip", files),
                         UploadOptions(test_fraction=0.25, resize=(16, 12)), LIMITS)
    assert tuple(result.train.images.shape[1:]) == (3, 16, 12)  # (C, height, width)
    assert tuple(result.test.images.shape[1:]) == (3, 16, 12)
    assert len(result.train) + len(result.test) == 8


def test_a_flat_image_survives_resizing(tmp_path):
    files = {}
    for k, cls in enumerate(("cat", "dog")):
        for i, size in enumerate(((10, 10), (7, 13))):
            files[f"{cls}/{i}.png"] = encode(np.full(size + (3,), 60 + 100 * k, np.uint8))
    result = materialize(write_zip(tmp_path / "d.zip", files),
                         UploadOptions(test_fraction=0.5, resize=(8, 8)), LIMITS)
    for split in (result.train, result.test):
        for image, label in zip(split.images, split.labels):
            assert tuple(image.shape) == (3, 8, 8)
            assert torch.all(image == 60 + 100 * int(label))


def test_mixed_modes_are_rejected_naming_both_files(tmp_path):
    files = two_class_folder()  # RGB
    files["dog/gray.png"] = encode(pattern(4, channels=1))
    message = rejected(write_zip(tmp_path / "d.zip", files))
    assert "dog/gray.png" in message and "cat/0.png" in message
    assert "mode" in message and "channels" in message


@pytest.mark.parametrize("channels", [1, 3])
def test_mixed_modes_pass_with_declared_channels(tmp_path, channels):
    files = {"cat/rgb.png": encode(np.full((5, 4, 3), 90, np.uint8)),
             "cat/gray.png": encode(np.full((5, 4), 90, np.uint8)),
             "dog/rgb.png": encode(np.full((5, 4, 3), 200, np.uint8)),
             "dog/gray.png": encode(np.full((5, 4), 200, np.uint8))}
    result = materialize(write_zip(tmp_path / "d.zip", files),
                         UploadOptions(test_fraction=0.5, channels=channels), LIMITS)
    for split in (result.train, result.test):
        assert tuple(split.images.shape[1:]) == (channels, 5, 4)
        for image, label in zip(split.images, split.labels):
            assert torch.all(image == (90, 200)[int(label)])


@pytest.mark.parametrize("resize", [None, (6, 6)])
def test_palette_rgba_and_1_bit_images_become_rgb_or_gray(tmp_path, resize):
    red, teal = (200, 10, 10), (0, 128, 128)
    palette = Image.new("P", (6, 6))
    palette.putpalette(list(red) + list(teal) + [0] * 762)
    rgba = Image.new("RGBA", (6, 6), teal + (255,))

    def saved(image: Image.Image) -> bytes:
        buf = io.BytesIO()
        image.save(buf, "PNG")
        return buf.getvalue()

    files = {"red/p.png": saved(palette),  # every pixel is palette index 0: red
             "red/rgb.png": encode(np.full((6, 6, 3), red, np.uint8)),
             "teal/rgba.png": saved(rgba),
             "teal/rgb.png": encode(np.full((6, 6, 3), teal, np.uint8))}
    if resize:  # different sizes: every image goes through the resize
        files["red/p.png"] = saved(palette.resize((9, 4)))
        files["teal/rgba.png"] = saved(rgba.resize((3, 11)))
    result = materialize(write_zip(tmp_path / "d.zip", files),
                         UploadOptions(test_fraction=0.5, resize=resize), LIMITS)
    for split in (result.train, result.test):
        assert tuple(split.images.shape[1:]) == (3, 6, 6)
        for image, label in zip(split.images, split.labels):
            color = (red, teal)[int(label)]
            assert image[:, 0, 0].tolist() == list(color) and torch.all(image == image[:, :1, :1])

    bits = {f"{c}/{i}.png": saved(Image.new("1", (4 + i, 4), c == "white"))
            for c in ("black", "white") for i in range(2)}
    result = materialize(write_zip(tmp_path / "bits.zip", bits),
                         UploadOptions(test_fraction=0.5, resize=(4, 4)), LIMITS)
    assert tuple(result.train.images.shape[1:]) == (1, 4, 4)
    for split in (result.train, result.test):
        for image, label in zip(split.images, split.labels):
            assert torch.all(image == (0, 255)[int(label)])


def test_grayscale_dataset_is_one_channel(tmp_path):
    files = {f"{c}/{i}.png": encode(pattern(10 * k + i, channels=1))
             for k, c in enumerate(("cat", "dog")) for i in range(2)}
    result = materialize(write_zip(tmp_path / "d.zip", files), UploadOptions(test_fraction=0.5),
                         LIMITS)
    expected = sorted((k, chw(pattern(10 * k + i, channels=1)).tobytes())
                      for k in range(2) for i in range(2))
    assert tuple(result.train.images.shape[1:]) == (1, 5, 4)
    assert sorted(pairs(result.train) + pairs(result.test)) == expected


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    wide = np.array([[0, 257, 32768, 65535], [1000, 20000, 40000, 60000]], np.uint16)
    files = {"cat/a.png": encode(wide), "cat/b.png": encode(wide),
             "dog/a.png": encode(wide[::-1].copy()), "dog/b.png": encode(wide[::-1].copy())}
    assert Image.open(io.BytesIO(files["cat/a.png"])).mode.startswith("I")  # really 16-bit
    result = materialize(write_zip(tmp_path / "d.zip", files), UploadOptions(test_fraction=0.5),
                         LIMITS)
    scaled = np.rint(wide.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert scaled[0].tolist() == [0, 1, 128, 255]
    images = torch.cat([result.train.images, result.test.images])
    labels = torch.cat([result.train.labels, result.test.labels])
    for image, label in zip(images, labels):
        want = scaled if label == 0 else scaled[::-1]
        assert image.shape == (1, 2, 4)
        assert image[0].numpy().tolist() == want.tolist()


def test_an_image_over_max_image_pixels_is_rejected(tmp_path):
    files = two_class_folder()
    files["dog/huge.png"] = encode(np.zeros((40, 30, 3), np.uint8))
    limits = Limits(max_entries=100, max_unpacked_bytes=MB, max_image_pixels=1000)
    message = rejected(write_zip(tmp_path / "d.zip", files), limits=limits)
    assert "dog/huge.png" in message and "30x40" in message and "1000 pixels" in message


def test_a_huge_image_header_is_rejected_before_decoding(tmp_path):
    files = two_class_folder()
    files["dog/bomb.png"] = crafted_png(5000, 5000)  # 25 Mpx claimed in ~60 bytes
    tracemalloc.start()
    try:
        message = rejected(write_zip(tmp_path / "d.zip", files))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "dog/bomb.png" in message and "5000x5000" in message
    assert peak < 5 * MB


def test_a_header_past_pillows_own_bomb_limit_names_the_size(tmp_path):
    files = two_class_folder()
    files["dog/bomb.png"] = crafted_png(20000, 20000)
    message = rejected(write_zip(tmp_path / "d.zip", files))
    assert "dog/bomb.png" in message and "pixels" in message


def test_progress_reports_done_and_total_ending_at_total(tmp_path):
    files = two_class_folder()
    files["README.md"] = b"not counted"
    calls = []
    materialize(write_zip(tmp_path / "d.zip", files), UploadOptions(test_fraction=0.34), LIMITS,
                lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (6, 6)
    assert all(total == 6 and 1 <= done <= 6 for done, total in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


# ---- .npz ----------------------------------------------------------------------------------

def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def npy_header(shape: tuple, descr: str = "|u1") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


def write_npz(path: Path, arrays: dict[str, np.ndarray | bytes]) -> Path:
    """Each value is an array (saved as .npy) or raw .npy bytes (for crafted headers)."""
    with zipfile.ZipFile(path, "w") as zf:
        for key, value in arrays.items():
            zf.writestr(f"{key}.npy", value if isinstance(value, bytes) else npy(value))
    return path


def npz_arrays(x_shape=(6, 5, 4, 3), n_test: int = 4, dtype=np.uint8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n_train = x_shape[0]
    def images(n):
        return rng.integers(0, 256, (n,) + tuple(x_shape[1:]), dtype=np.uint8).astype(dtype)
    return {"x_train": images(n_train), "y_train": np.arange(n_train) % 3,
            "x_test": images(n_test), "y_test": np.arange(n_test) % 3}


@pytest.mark.parametrize("layout, x_shape, to_chw", [
    ("NHWC rgb", (6, 5, 4, 3), lambda x: x.transpose(0, 3, 1, 2)),
    ("NHWC gray", (6, 5, 4, 1), lambda x: x.transpose(0, 3, 1, 2)),
    ("NHW gray", (6, 5, 4), lambda x: x[:, None]),
    ("NCHW rgb", (6, 3, 5, 4), lambda x: x),
    ("NCHW gray", (6, 1, 5, 4), lambda x: x),
])
def test_npz_image_layouts(tmp_path, layout, x_shape, to_chw):
    arrays = npz_arrays(x_shape)
    result = materialize(write_npz(tmp_path / "d.npz", arrays), UploadOptions(), LIMITS)
    assert result.layout == "npz"
    assert result.train.images.dtype == torch.uint8
    assert np.array_equal(result.train.images.numpy(), to_chw(arrays["x_train"]))
    assert np.array_equal(result.test.images.numpy(), to_chw(arrays["x_test"]))
    assert result.train.labels.dtype == torch.int64
    assert result.train.labels.tolist() == arrays["y_train"].tolist()
    assert result.test.labels.tolist() == arrays["y_test"].tolist()


def test_npz_saved_by_numpy_savez_compressed(tmp_path):
    arrays = npz_arrays((6, 5, 4))
    path = tmp_path / "d.npz"
    np.savez_compressed(path, **arrays)
    result = materialize(path, UploadOptions(), LIMITS)
    assert np.array_equal(result.train.images.numpy(), arrays["x_train"][:, None])


def test_npz_float_images_in_0_1_are_scaled_to_bytes(tmp_path):
    arrays = npz_arrays((4, 2, 2))
    arrays["x_train"] = np.array([0.0, 1.0, 0.5, 0.25] * 4, np.float32).reshape(4, 2, 2)
    arrays["x_test"] = np.full((4, 2, 2), 1 / 255, np.float64)
    result = materialize(write_npz(tmp_path / "d.npz", arrays), UploadOptions(), LIMITS)
    assert result.train.images[0, 0].flatten().tolist() == [0, 255, 128, 64]
    assert torch.all(result.test.images == 1)


def test_npz_float_images_outside_0_1_are_rejected(tmp_path):
    arrays = npz_arrays((4, 2, 2))
    arrays["x_train"] = np.full((4, 2, 2), 2.0, np.float32)
    assert "x_train" in rejected(write_npz(tmp_path / "d.npz", arrays))


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_npz_nan_images_are_rejected(tmp_path):
    arrays = npz_arrays((4, 2, 2))
    arrays["x_train"] = np.full((4, 2, 2), np.nan, np.float32)
    assert "x_train" in rejected(write_npz(tmp_path / "d.npz", arrays))


def test_npz_class_names_are_used(tmp_path):
    arrays = npz_arrays()
    arrays["classes"] = np.array(["airplane", "bird", "cat"])
    result = materialize(write_npz(tmp_path / "d.npz", arrays), UploadOptions(), LIMITS)
    assert result.classes == ["airplane", "bird", "cat"]


def test_npz_class_names_may_outnumber_the_labels_used(tmp_path):
    arrays = npz_arrays()
    arrays["classes"] = np.array(["a", "b", "c", "d", "e"])
    result = materialize(write_npz(tmp_path / "d.npz", arrays), UploadOptions(), LIMITS)
    assert result.classes == ["a", "b", "c", "d", "e"]


def test_npz_without_classes_names_them_by_number(tmp_path):
    arrays = npz_arrays()
    arrays["y_test"] = np.array([0, 4, 1, 2])
    result = materialize(write_npz(tmp_path / "d.npz", arrays), UploadOptions(), LIMITS)
    assert result.classes == ["0", "1", "2", "3", "4"]


def test_npz_label_out_of_range_of_classes_is_rejected(tmp_path):
    arrays = npz_arrays()
    arrays["classes"] = np.array(["a", "b", "c"])
    arrays["y_test"] = np.array([0, 1, 3, 2])
    message = rejected(write_npz(tmp_path / "d.npz", arrays))
    assert "out of range" in message and "3" in message


def test_npz_one_class_only_is_rejected(tmp_path):
    arrays = npz_arrays()
    arrays["y_train"] = np.zeros(6, np.int64)
    arrays["y_test"] = np.zeros(4, np.int64)
    assert "at least 2 classes" in rejected(write_npz(tmp_path / "d.npz", arrays))


def test_npz_one_class_name_only_is_rejected(tmp_path):
    arrays = npz_arrays()
    arrays["y_train"] = np.zeros(6, np.int64)
    arrays["y_test"] = np.zeros(4, np.int64)
    arrays["classes"] = np.array(["only"])
    assert "at least 2 classes" in rejected(write_npz(tmp_path / "d.npz", arrays))


@pytest.mark.parametrize("key", ["y_train", "y_test"])
def test_npz_negative_labels_are_rejected(tmp_path, key):
    arrays = npz_arrays()
    arrays[key] = arrays[key] - 1
    message = rejected(write_npz(tmp_path / "d.npz", arrays))
    assert key in message and "negative" in message


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.bool_])
def test_npz_non_integer_labels_are_rejected(tmp_path, dtype):
    arrays = npz_arrays()
    arrays["y_train"] = (arrays["y_train"] % 2).astype(dtype)
    message = rejected(write_npz(tmp_path / "d.npz", arrays))
    assert "y_train" in message and "integers" in message


@pytest.mark.parametrize("key, y", [("y_train", np.array([0, 1, 2])),
                                    ("y_test", np.array([0, 1, 2, 0, 1])),
                                    ("y_train", np.zeros((6, 1), np.int64))])
def test_npz_label_shape_mismatch_is_rejected(tmp_path, key, y):
    arrays = npz_arrays()
    arrays[key] = y
    message = rejected(write_npz(tmp_path / "d.npz", arrays))
    assert key in message and "one label per image" in message


def test_npz_train_and_test_image_shapes_must_agree(tmp_path):
    arrays = npz_arrays((6, 5, 4, 3))
    arrays["x_test"] = np.zeros((4, 5, 5, 3), np.uint8)
    message = rejected(write_npz(tmp_path / "d.npz", arrays))
    assert "x_train" in message and "x_test" in message and "(3, 5, 4)" in message


@pytest.mark.parametrize("shape", [(6,), (6, 5, 4, 2), (6, 5, 4, 3, 1)])
def test_npz_bad_image_shapes_are_rejected(tmp_path, shape):
    arrays = npz_arrays()
    arrays["x_train"] = np.zeros(shape, np.uint8)
    assert "x_train" in rejected(write_npz(tmp_path / "d.npz", arrays))


@pytest.mark.parametrize("missing", ["x_train", "y_train", "x_test", "y_test"])
def test_npz_missing_key_is_rejected_by_name(tmp_path, missing):
    arrays = npz_arrays()
    del arrays[missing]
    message = rejected(write_npz(tmp_path / "d.npz", arrays))
    assert f"lacks {missing}" in message


def test_npz_object_array_is_rejected_without_unpickling(tmp_path):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = np.array([Payload()], dtype=object)
    pickle.loads(pickle.dumps(Payload()))  # control: unpickling the payload creates the marker
    assert marker.exists()
    marker.unlink()
    arrays: dict = npz_arrays()
    arrays["x_train"] = npy(payload, allow_pickle=True)
    path = write_npz(tmp_path / "d.npz", arrays)
    message = rejected(path)
    assert "x_train" in message and "object" in message.lower()
    assert not marker.exists()


def test_npz_object_classes_array_is_rejected(tmp_path):
    arrays: dict = npz_arrays()
    arrays["classes"] = npy(np.array(["a", {"b": 1}, "c"], dtype=object), allow_pickle=True)
    assert "classes.npy" in rejected(write_npz(tmp_path / "d.npz", arrays))


def test_npz_declared_size_over_the_cap_is_rejected_before_allocation(tmp_path, monkeypatch):
    arrays: dict = npz_arrays()
    arrays["x_train"] = npy_header((10**6, 1000)) + bytes(64)  # claims 1 GB, holds 64 bytes
    path = write_npz(tmp_path / "d.npz", arrays)
    assert path.stat().st_size < 10_000

    def no_load(*args, **kwargs):
        raise AssertionError("np.load was called")

    monkeypatch.setattr("core.uploads.npz.np.load", no_load)
    limits = Limits(max_entries=100, max_unpacked_bytes=10 * MB, max_image_pixels=10**6)
    tracemalloc.start()
    try:
        message = rejected(path, limits=limits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "bytes" in message and str(10 * MB) in message
    assert peak < 2 * MB


def test_npz_arrays_summed_over_the_cap_are_rejected(tmp_path):
    arrays = npz_arrays((6, 5, 4, 3))  # 360 + 240 image bytes, 160 label bytes, headers
    limits = Limits(max_entries=100, max_unpacked_bytes=500, max_image_pixels=10**6)
    assert "500" in rejected(write_npz(tmp_path / "d.npz", arrays), limits=limits)


@pytest.mark.parametrize("crafted", [
    # a negative size in one header offsets x_train's claimed 1 GB
    {"x_train": npy_header((10**6, 1000)) + bytes(64), "classes": npy_header((-10**9,))},
    {"x_train": npy_header((2**32, 2**32)) + bytes(64)},  # int64 product wraps to 0
    {"x_train": npy_header((2**70,)) + bytes(64)},  # not an int64 at all: OverflowError
], ids=["negative-dim", "int64-wrap", "huge-int"])
def test_npz_crafted_shapes_cannot_dodge_the_cap(tmp_path, monkeypatch, crafted):
    arrays: dict = npz_arrays()
    arrays.update(crafted)

    def no_load(*args, **kwargs):
        raise AssertionError("np.load was called")

    monkeypatch.setattr("core.uploads.npz.np.load", no_load)
    limits = Limits(max_entries=100, max_unpacked_bytes=10 * MB, max_image_pixels=10**6)
    rejected(write_npz(tmp_path / "d.npz", arrays), limits=limits)


def test_npz_with_a_non_numpy_entry_is_rejected(tmp_path):
    arrays: dict = npz_arrays()
    arrays["classes"] = b"this is not a numpy file"
    assert "classes.npy" in rejected(write_npz(tmp_path / "d.npz", arrays))


# ---- the memory budget: checked from the headers, before anything is decoded ---------------

def budget(max_decoded_bytes: int, max_unpacked_bytes: int = 64 * MB) -> Limits:
    return Limits(max_entries=10_000, max_unpacked_bytes=max_unpacked_bytes,
                  max_image_pixels=1_000_000, max_decoded_bytes=max_decoded_bytes)


def no_decoding(monkeypatch) -> None:
    def refuse(*_args, **_kwargs):
        raise AssertionError("an image was decoded")
    monkeypatch.setattr("core.uploads.image_folder.decode_image", refuse)


def test_a_resize_over_the_budget_is_refused_before_any_image_is_decoded(tmp_path,
                                                                         monkeypatch):
    # Six 8x8 PNGs asking for 600x600: 6 x 3 x 600 x 600 = 6.48 MB of images decoded.
    files = {f"{c}/{i}.png": encode(pattern(i, 8, 8)) for c in ("cat", "dog") for i in range(3)}
    path = write_zip(tmp_path / "d.zip", files)
    options = UploadOptions(test_fraction=0.34, resize=(600, 600))
    no_decoding(monkeypatch)
    message = rejected(path, options, budget(6 * MB))
    assert "6 images of 3x600x600" in message and "6480000" in message
    assert "TRAINHUB_DATASET_MAX_DECODED_BYTES" in message and str(6 * MB) in message


def test_declared_channels_count_in_the_budget(tmp_path):
    files = {f"{c}/{i}.png": encode(pattern(i, 8, 8)) for c in ("cat", "dog") for i in range(3)}
    path = write_zip(tmp_path / "d.zip", files)
    gray = UploadOptions(test_fraction=0.34, resize=(600, 600), channels=1)
    result = materialize(path, gray, budget(3 * MB))  # 2.16 MB of images plus an entry
    assert tuple(result.train.images.shape[1:]) == (1, 600, 600)
    assert "3x600x600" in rejected(path, UploadOptions(test_fraction=0.34, resize=(600, 600)),
                                   budget(3 * MB))


def test_without_a_resize_the_first_images_header_sizes_the_budget(tmp_path, monkeypatch):
    files = {f"{c}/{i}.png": encode(pattern(i, 300, 200)) for c in ("cat", "dog")
             for i in range(3)}
    path = write_zip(tmp_path / "d.zip", files)
    no_decoding(monkeypatch)
    assert "6 images of 3x300x200" in rejected(path, UploadOptions(test_fraction=0.34),
                                               budget(MB))


def test_an_upload_just_within_the_budget_is_decoded(tmp_path):
    files = {f"{c}/{i}.png": encode(pattern(i, 8, 8)) for c in ("cat", "dog") for i in range(3)}
    path = write_zip(tmp_path / "d.zip", files)
    biggest = max(len(data) for data in files.values())
    need = 6 * 3 * 40 * 40 + biggest
    options = UploadOptions(test_fraction=0.34, resize=(40, 40))
    result = materialize(path, options, budget(need))
    assert len(result.train) + len(result.test) == 6
    assert "TRAINHUB_DATASET_MAX_DECODED_BYTES" in rejected(path, options, budget(need - 1))


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_decoding_holds_about_the_budgets_estimate(tmp_path, fmt):
    # 60 images of 3x256x256 (11.8 MB): decoded in place, never stacked or split by copies.
    files = {f"{c}/{i}.png": encode(pattern(i, 16, 16)) for c in ("cat", "dog")
             for i in range(30)}
    path = (write_zip(tmp_path / "d.zip", files) if fmt == "zip"
            else write_tar(tmp_path / "d.tar.gz", files))
    images = 60 * 3 * 256 * 256
    tracemalloc.start()
    try:
        result = materialize(path, UploadOptions(resize=(256, 256)), budget(images + MB))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(result.train) + len(result.test) == 60
    assert peak < images + 3 * MB, peak


def test_an_npz_over_the_budget_is_refused_before_it_is_loaded(tmp_path, monkeypatch):
    arrays: dict = npz_arrays((6, 1, 100, 100))
    arrays["x_train"] = npy_header((1000, 1, 100, 100)) + bytes(64)  # claims 10 MB
    arrays["y_train"] = npy_header((1000,), "<i8") + bytes(64)
    path = write_npz(tmp_path / "d.npz", arrays)

    def no_load(*args, **kwargs):
        raise AssertionError("np.load was called")

    monkeypatch.setattr("core.uploads.npz.np.load", no_load)
    message = rejected(path, limits=budget(8 * MB))
    assert "as stored" in message and "TRAINHUB_DATASET_MAX_DECODED_BYTES" in message


@pytest.mark.parametrize("images, copied", [
    (lambda n: np.zeros((n, 1, 32, 32), np.uint8), 0),  # N, C, H, W bytes: used as they are
    (lambda n: np.zeros((n, 32, 32), np.uint8), 0),  # N, H, W: a view adds the channel
    (lambda n: np.zeros((n, 32, 32, 3), np.uint8), 3 * 32 * 32),  # channels last: reordered
    (lambda n: np.zeros((n, 1, 32, 32), np.float32), 32 * 32),  # floats: scaled into bytes
    (lambda n: np.asfortranarray(np.zeros((n, 1, 32, 32), np.uint8)), 32 * 32),
], ids=["nchw-uint8", "nhw-uint8", "nhwc-uint8", "float32", "fortran-order"])
def test_an_npz_budget_counts_the_arrays_and_their_conversion_copies(tmp_path, images,
                                                                     copied):
    arrays = {"x_train": images(100), "y_train": np.arange(100) % 2,
              "x_test": images(4), "y_test": np.arange(4) % 2}
    path = write_npz(tmp_path / "d.npz", arrays)
    stored = sum(a.nbytes for a in arrays.values())
    need = stored + 104 * copied + 8 * 104  # the labels become int64
    result = materialize(path, UploadOptions(), budget(need))
    assert (len(result.train), len(result.test)) == (100, 4)
    message = rejected(path, limits=budget(need - 1))
    assert f"about {need} bytes" in message


def test_npz_floats_are_converted_a_slice_at_a_time(tmp_path):
    # 24 MB of float32 images: whole-array temporaries (x * 255, its rint, the finite
    # check) would take three times that again.
    x_train = np.random.default_rng(0).random((6000, 1, 32, 32), np.float32)
    arrays = {"x_train": x_train, "y_train": np.arange(6000) % 2,
              "x_test": x_train[:10], "y_test": np.arange(10) % 2}
    path = write_npz(tmp_path / "d.npz", arrays)
    tracemalloc.start()
    try:
        result = materialize(path, UploadOptions(), budget(64 * MB))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(result.train.images.numpy(), np.rint(x_train * 255).astype(np.uint8))
    assert peak < x_train.nbytes + x_train.size + 16 * MB, peak


# ---- check_headers: what the API reads before it accepts an upload ----------------------------

def spooled(path: Path) -> io.BytesIO:
    """The upload as the API holds it: an open file, not a path."""
    return io.BytesIO(path.read_bytes())


def test_check_headers_refuses_what_the_headers_show_wrong(tmp_path, monkeypatch):
    no_decoding(monkeypatch)
    files = {f"{c}/{i}.png": encode(pattern(i, 8, 8)) for c in ("cat", "dog") for i in range(3)}
    zipped = spooled(write_zip(tmp_path / "d.zip", files))
    assert check_headers(zipped, UploadOptions(test_fraction=0.34), budget(MB)) == "zip"
    with pytest.raises(UploadRejected, match="TRAINHUB_DATASET_MAX_DECODED_BYTES"):
        check_headers(zipped, UploadOptions(resize=(9999, 9999)), budget(512 * MB))
    one_class = spooled(write_zip(tmp_path / "one.zip", {"cat/0.png": files["cat/0.png"]}))
    with pytest.raises(UploadRejected, match="at least 2 classes"):
        check_headers(one_class, UploadOptions(), LIMITS)
    with pytest.raises(UploadRejected, match="not a .tar"):
        check_headers(io.BytesIO(b"just text"), UploadOptions(), LIMITS)


def test_check_headers_refuses_an_npz_over_the_budget_without_loading_it(tmp_path,
                                                                         monkeypatch):
    arrays: dict = npz_arrays((6, 1, 1000, 1000))
    npz = spooled(write_npz(tmp_path / "d.npz", arrays))
    assert check_headers(npz, UploadOptions(), LIMITS) == "npz"
    monkeypatch.setattr("core.uploads.npz.np.load", None)  # never called here
    arrays["x_train"] = npy_header((1000, 1, 1000, 1000)) + bytes(64)  # claims 1 GB
    arrays["y_train"] = npy_header((1000,), "<i8") + bytes(64)
    with pytest.raises(UploadRejected, match="TRAINHUB_DATASET_MAX_DECODED_BYTES"):
        check_headers(spooled(write_npz(tmp_path / "big.npz", arrays)), UploadOptions(),
                      budget(512 * MB, max_unpacked_bytes=4096 * MB))  # the defaults


def test_check_headers_leaves_a_tars_entries_to_the_worker(tmp_path, monkeypatch):
    files = {"cat/0.png": encode(pattern(0)), "cat/1.png": encode(pattern(1))}  # one class
    tar = spooled(write_tar(tmp_path / "d.tar.gz", files))
    monkeypatch.setattr("core.uploads.materialize.open_entries", None)  # never walked
    assert check_headers(tar, UploadOptions(), LIMITS) == "tar"


def test_check_headers_calls_a_damaged_zip_damaged(tmp_path):
    files = {f"{c}/{i}.png": encode(pattern(i)) for c in ("cat", "dog") for i in range(3)}
    raw = bytearray(write_zip(tmp_path / "d.zip", files).read_bytes())
    central = raw.find(b"PK\x01\x02")
    raw[central + 42:central + 46] = (10**6).to_bytes(4, "little")  # a local header nowhere
    with pytest.raises(UploadRejected, match="damaged|corrupt|not an image"):
        check_headers(io.BytesIO(bytes(raw)), UploadOptions(), LIMITS)
