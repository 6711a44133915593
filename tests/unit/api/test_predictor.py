"""/predict's pieces (api/predictor.py): decoding uploads, tensors as training saw them, the
model cache and top-k predictions. No database, no HTTP."""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import models
from api.predictor import LoadedModel, Predictor
from core.artifacts import LocalArtifactStore, checkpoint_key
from core.image_decode import (
    ImageTooLarge,
    NotAnImage,
    decode_image,
    normalize,
    open_image,
    to_tensor,
)
from core.jobspec import Hyperparameters, JobSpec
from core.tensor_datasets import ImageDataset, Split, channel_stats
from tests.images import zeros_png
from tests.memory import MB, Peak
from tests.unit.factories import one_torch_thread
from worker.checkpointing import build
from worker.control import RunControl
from worker.data import _load_digits, digits_split
from worker.loop import fit

MAX_PIXELS = 64_000_000  # core.config's default predict_max_pixels


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


# ---- crafted PNGs ----------------------------------------------------------------------------

def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def crafted_png(width: int, height: int, idat: bytes | None = None) -> bytes:
    """An 8-bit grayscale PNG whose header claims width x height; the pixel data is tiny."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    if idat is None:
        idat = zlib.compress(b"\x00" * 16)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def test_the_png_crafting_is_valid():
    """Control: the same construction with honest pixel data is a PNG Pillow decodes."""
    rows = b"".join(b"\x00" + bytes([10 * y + x for x in range(3)]) for y in range(2))
    image = decode_image(crafted_png(3, 2, zlib.compress(rows)), MAX_PIXELS)
    assert image.size == (3, 2) and image.mode == "L"
    assert to_tensor(image, (1, 2, 3)).tolist() == [[[0, 1, 2], [10, 11, 12]]]


@pytest.mark.parametrize("width, height, max_pixels", [
    (20000, 20000, MAX_PIXELS),     # 400 Mpx: beyond Pillow's own bomb limit
    (10000, 10000, MAX_PIXELS),     # 100 Mpx: Pillow only warns, our limit refuses
    (9000, 9000, MAX_PIXELS),       # 81 Mpx: no Pillow warning at all
    (1, MAX_PIXELS + 1, MAX_PIXELS),
    (1001, 1000, 1_000_000),
    (65535, 65535, MAX_PIXELS),
])
def test_a_huge_header_is_refused_before_decoding(width, height, max_pixels):
    data = crafted_png(width, height)
    assert len(data) < 200
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with pytest.raises(ImageTooLarge) as info:
                decode_image(data, max_pixels, "image 1 (huge.png)")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20
    assert "image 1 (huge.png)" in str(info.value)


def test_an_image_at_the_limit_is_accepted():
    rows = b"".join(b"\x00" + bytes(20) for _ in range(50))
    image = decode_image(crafted_png(20, 50, zlib.compress(rows)), 1000)
    assert image.size == (20, 50)
    with pytest.raises(ImageTooLarge):
        decode_image(crafted_png(20, 51, zlib.compress(rows + b"\x00" + bytes(20))), 1000)


def test_a_huge_header_allocates_no_pixel_memory(monkeypatch):
    """tracemalloc cannot see Pillow's C allocations: spy on the pixel buffer allocator."""
    from PIL import Image as PILImage

    allocated = []
    real_new = PILImage.core.new

    def spy(mode, size, *args):
        allocated.append((mode, tuple(size)))
        return real_new(mode, size, *args)

    monkeypatch.setattr(PILImage.core, "new", spy)
    rows = b"".join(b"\x00" + bytes(3) for _ in range(2))
    decode_image(crafted_png(3, 2, zlib.compress(rows)), MAX_PIXELS)
    assert allocated == [("L", (3, 2))]  # control: the spy sees a real decode's buffer
    allocated.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for width, height in ((20000, 20000), (10000, 10000), (9000, 9000)):
            with pytest.raises(ImageTooLarge):
                decode_image(crafted_png(width, height), MAX_PIXELS)
    assert allocated == []


# ---- decoding every format and mode ----------------------------------------------------------

GRAY = 120
SIZE = (23, 17)  # width, height: not square, so a swapped axis shows


def make_image(mode: str) -> Image.Image:
    if mode == "I;16":
        return Image.new("I;16", SIZE, GRAY)
    base = Image.new("RGB", SIZE, (GRAY, GRAY, GRAY))
    if mode == "P":
        return base.convert("P", palette=Image.Palette.ADAPTIVE)
    if mode == "LA":
        return base.convert("L").convert("LA")
    return base.convert(mode)


FORMATS = [
    ("PNG", m) for m in ("L", "RGB", "RGBA", "P", "LA", "I;16", "1")
] + [("JPEG", m) for m in ("L", "RGB", "CMYK")] + [
    ("GIF", m) for m in ("L", "P", "RGB")
] + [("BMP", m) for m in ("L", "RGB", "RGBA", "P", "1")] + [
    ("WEBP", m) for m in ("RGB", "RGBA", "L")
] + [("TIFF", m) for m in ("I;16", "CMYK", "F", "I", "LA", "RGBA")]


@pytest.mark.parametrize("fmt, mode", FORMATS, ids=[f"{f}-{m}" for f, m in FORMATS])
def test_every_format_and_mode_decodes_to_the_target_shape(fmt, mode):
    image = make_image(mode)
    assert image.mode == mode
    data = encode(image, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    decoded = decode_image(data, MAX_PIXELS)
    assert decoded.size == SIZE
    tolerance = 20 if mode == "1" else 3  # "1" is a dithered pattern
    for shape in [(1, 8, 8), (3, 8, 8), (1, 17, 23), (3, 17, 23), (3, 40, 30), (1, 28, 28)]:
        tensor = to_tensor(decoded, shape)
        assert tensor.dtype == torch.uint8
        assert tuple(tensor.shape) == shape
        assert tensor.is_contiguous()
        assert abs(tensor.float().mean().item() - GRAY) <= tolerance, (shape, tensor.float().mean())


def test_rgb_channels_and_axes_keep_their_place():
    array = np.zeros((17, 23, 3), dtype=np.uint8)  # H, W, C
    array[:, :, 0] = np.arange(23)[None, :] * 10        # red grows to the right
    array[:, :, 1] = np.arange(17)[:, None] * 10        # green grows downwards
    array[:, :, 2] = 200
    decoded = decode_image(encode(Image.fromarray(array), "PNG"), MAX_PIXELS)
    tensor = to_tensor(decoded, (3, 17, 23))
    assert torch.equal(tensor, torch.from_numpy(array).permute(2, 0, 1))
    gray = to_tensor(decoded, (1, 17, 23))
    expected = torch.from_numpy(np.array(Image.fromarray(array).convert("L")))
    assert torch.equal(gray[0], expected)


@pytest.mark.parametrize("shape", [(1, 32, 32), (3, 32, 32)])
def test_a_large_grayscale_image_is_resized(shape):
    array = (np.add.outer(np.arange(3000), np.arange(4000)) % 256).astype(np.uint8)
    image = Image.fromarray(array)  # 4000 x 3000, mode L
    assert image.size == (4000, 3000)
    decoded = decode_image(encode(image, "PNG", compress_level=1), MAX_PIXELS)
    tensor = to_tensor(decoded, shape)
    assert tensor.dtype == torch.uint8 and tuple(tensor.shape) == shape
    if shape[0] == 3:  # a gray image gives three equal channels
        assert torch.equal(tensor[0], tensor[1]) and torch.equal(tensor[1], tensor[2])


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_a_16_bit_image_is_scaled_not_clipped(fmt):
    """Image.convert('L') clips 16-bit values at 255: a mid-gray became white."""
    image = Image.new("I;16", SIZE, GRAY * 257)  # mid-gray on a 16-bit scale
    decoded = decode_image(encode(image, fmt), MAX_PIXELS)
    for shape in [(1, 17, 23), (3, 17, 23), (1, 8, 8)]:
        tensor = to_tensor(decoded, shape)
        assert abs(tensor.float().mean().item() - GRAY) <= 1, shape


def test_a_16_bit_gradient_keeps_its_order_and_range():
    values = np.linspace(0, 65535, 23 * 17).round().astype(np.uint16).reshape(17, 23)
    decoded = decode_image(encode(Image.fromarray(values), "PNG"), MAX_PIXELS)
    assert decoded.mode == "I;16"
    tensor = to_tensor(decoded, (1, 17, 23))[0].flatten()
    assert tensor[0] == 0 and tensor[-1] == 255
    assert torch.all(tensor[1:] >= tensor[:-1])
    expected = torch.from_numpy(np.rint(values.astype(np.float64) * 255 / 65535)).flatten()
    assert (tensor.double() - expected).abs().max() <= 1


def checkerboard(size: int = 16) -> np.ndarray:
    a = np.zeros((size, size), np.uint8)
    a[::2, ::2] = 255
    a[1::2, 1::2] = 255
    return a


# Pillow resizes '1' and 'P' images by nearest neighbour whatever is asked, so to_tensor
# converts before resizing: a 16x16 checkerboard must become mid-gray at 8x8 in every mode.
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "I;16", "P", "1"])
@pytest.mark.parametrize("channels", [1, 3])
def test_resizing_does_not_depend_on_the_images_mode(mode, channels):
    board = checkerboard()
    reference = to_tensor(Image.fromarray(board), (channels, 8, 8))
    assert 100 < reference.float().mean() < 155  # bilinear: black and white average out
    if mode == "I;16":
        image = Image.fromarray(board.astype(np.uint16) * 257)
    else:
        image = Image.fromarray(board).convert(mode)
    assert image.mode == mode
    tensor = to_tensor(image, (channels, 8, 8))
    assert (tensor.int() - reference.int()).abs().max() <= 1


def test_a_lab_tiff_for_a_one_channel_model():
    # Pillow has no LAB -> L conversion; to_uint8 goes through RGB.
    decoded = decode_image(encode(Image.new("LAB", SIZE, (50, 0, 0)), "TIFF"), MAX_PIXELS)
    assert decoded.mode == "LAB"
    assert tuple(to_tensor(decoded, (1, 8, 8)).shape) == (1, 8, 8)


@pytest.mark.parametrize("data", [
    b"", b"hello, world", b"%PDF-1.4\n" + os.urandom(100), os.urandom(4096),
    b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff",
], ids=["empty", "text", "pdf", "random", "png-signature-only", "gif-magic-only",
        "jpeg-magic-only"])
def test_non_images_are_not_images(data):
    with pytest.raises(NotAnImage):
        decode_image(data, MAX_PIXELS, "upload")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_truncated_images_are_not_images(fmt):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = encode(image, fmt)
    for cut in (len(data) // 2, len(data) * 3 // 4):
        with pytest.raises(NotAnImage):
            decode_image(data[:cut], MAX_PIXELS, "upload")


def test_a_png_with_a_bad_checksum_is_not_an_image():
    data = bytearray(encode(Image.new("L", (8, 8), 7), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF  # inside the compressed data: the CRC no longer matches
    with pytest.raises(NotAnImage):
        decode_image(bytes(data), MAX_PIXELS)


# ---- the digits test split, as a user would upload it -----------------------------------------

def test_digits_pngs_give_exactly_the_training_tensors():
    _, test = _load_digits()
    _, x_test, _, _ = digits_split()
    assert len(x_test) == len(test) > 300
    for i, digit in enumerate(x_test):
        pixels = [[round(v * 255 / 16) for v in row] for row in digit.tolist()]
        png = encode(Image.fromarray(np.array(pixels, dtype=np.uint8), mode="L"), "PNG")
        tensor = to_tensor(decode_image(png, MAX_PIXELS), (1, 8, 8))
        assert torch.equal(tensor, test.images[i]), i


# ---- predictions -----------------------------------------------------------------------------

def loaded_model(shape=(1, 8, 8), classes=("zero", "one", "two", "three", "four"),
                 seed=0) -> LoadedModel:
    torch.manual_seed(seed)
    model = models.build("lenet", shape, len(classes))
    model.eval()
    channels = shape[0]
    mean = torch.tensor([0.3, 0.4, 0.5][:channels]).view(1, -1, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.3][:channels]).view(1, -1, 1, 1)
    return LoadedModel(model, list(classes), shape, mean, std, epoch=3)


def random_images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    modes = ["L", "RGB", "RGBA", "P", "LA"]
    images = []
    for i in range(n):
        w, h = int(rng.integers(5, 40)), int(rng.integers(5, 40))
        rgb = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        image = rgb.convert(modes[i % len(modes)])
        images.append(decode_image(encode(image, "PNG"), MAX_PIXELS))
    return images


def expected_probabilities(loaded: LoadedModel, image: Image.Image) -> torch.Tensor:
    x = to_tensor(image, loaded.shape).unsqueeze(0).float() / 255
    x = (x - loaded.mean) / loaded.std
    with torch.no_grad():
        return torch.softmax(loaded.model(x), dim=1)[0]


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16)])
@pytest.mark.parametrize("top_k", [1, 3, 5])
def test_predict_gives_sorted_top_k_per_image_in_order(shape, top_k):
    loaded = loaded_model(shape)
    images = random_images(7)
    result = Predictor.predict(loaded, images, top_k)
    assert len(result) == len(images)
    for image, predictions in zip(images, result):
        assert len(predictions) == top_k
        assert all(set(p) == {"label", "index", "probability"} for p in predictions)
        probs = [p["probability"] for p in predictions]
        assert probs == sorted(probs, reverse=True)
        assert all(isinstance(p, float) and 0 <= p <= 1 for p in probs)
        assert all(p["label"] == loaded.classes[p["index"]] for p in predictions)
        assert all(isinstance(p["index"], int) for p in predictions)
        assert len({p["index"] for p in predictions}) == top_k
        expected = expected_probabilities(loaded, image)
        values, indices = expected.topk(top_k)
        assert [p["index"] for p in predictions] == indices.tolist()
        assert probs == pytest.approx(values.tolist(), abs=1e-5)
    json.dumps(result)  # the response body


def test_all_classes_sum_to_one():
    loaded = loaded_model()
    for predictions in Predictor.predict(loaded, random_images(6), top_k=5):
        assert sum(p["probability"] for p in predictions) == pytest.approx(1.0, abs=1e-5)
        assert sorted(p["index"] for p in predictions) == [0, 1, 2, 3, 4]
        assert sorted(p["label"] for p in predictions) == sorted(loaded.classes)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16)])
def test_a_batch_predicts_what_each_image_predicts_alone(shape):
    loaded = loaded_model(shape)
    images = random_images(9, seed=1)
    together = Predictor.predict(loaded, images, top_k=5)
    for image, batched in zip(images, together):
        alone, = Predictor.predict(loaded, [image], top_k=5)
        b = {p["index"]: p["probability"] for p in batched}
        a = {p["index"]: p["probability"] for p in alone}
        assert set(a) == set(b)
        for index in a:
            assert abs(a[index] - b[index]) <= 1e-5
    reversed_result = Predictor.predict(loaded, images[::-1], top_k=5)
    for x, y in zip(together, reversed_result[::-1]):
        assert [p["index"] for p in x] == [p["index"] for p in y]
        assert [p["probability"] for p in x] == pytest.approx(
            [p["probability"] for p in y], abs=1e-5)


def test_predict_does_not_change_the_model():
    loaded = loaded_model()
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    Predictor.predict(loaded, random_images(3), top_k=2)
    after = loaded.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# ---- a request's images: opened first, then decoded one at a time ----------------------------

def test_decode_gives_what_tensors_gives_for_the_same_images():
    loaded = loaded_model((3, 16, 16))
    data = [encode(image, "PNG") for image in random_images(6, seed=2)]
    opened = [(f"image {i + 1}", open_image(io.BytesIO(d), MAX_PIXELS)) for i, d in enumerate(data)]
    expected = Predictor.tensors(loaded, [decode_image(d, MAX_PIXELS) for d in data])
    assert torch.equal(Predictor.decode(loaded, opened), expected)


def test_decode_holds_one_image_at_a_time_and_gives_the_memory_back():
    # Four 4000x4000 RGB images: Pillow holds each in 64 MB (4 bytes a pixel), 256 MB if
    # they were all decoded before any was converted.
    loaded = loaded_model((1, 8, 8))
    png = zeros_png(4000, 4000)
    opened = [(f"image {i + 1}", open_image(io.BytesIO(png), MAX_PIXELS)) for i in range(4)]
    Predictor.decode(loaded, [("warm-up", open_image(io.BytesIO(png), MAX_PIXELS))])
    with Peak() as memory:
        batch = Predictor.decode(loaded, opened)
    assert tuple(batch.shape) == (4, 1, 8, 8) and int(batch.max()) == 0
    assert memory.rise < 110 * MB, str(memory)
    assert memory.after < memory.before + 16 * MB, str(memory)


def test_decode_names_the_image_that_cannot_be_decoded():
    loaded = loaded_model((1, 8, 8))
    good = encode(Image.new("L", (8, 8), 9), "PNG")
    cut = encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)),
                 "PNG")
    opened = [(name, open_image(io.BytesIO(data), MAX_PIXELS))
              for name, data in (("image 1 (a.png)", good), ("image 2 (b.png)", cut[:200]))]
    with pytest.raises(NotAnImage, match=r"image 2 \(b.png\)"):
        Predictor.decode(loaded, opened)


# ---- the model cache -------------------------------------------------------------------------

def tiny_dataset() -> ImageDataset:
    g = torch.Generator().manual_seed(0)

    def split(n):
        return Split(torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g),
                     torch.randint(0, 4, (n,), generator=g))

    train, test = split(12), split(4)
    mean, std = channel_stats(train.images)
    return ImageDataset("synthetic", ["ant", "bee", "cat", "dog"], train, test, mean, std)


@pytest.fixture(scope="module")
def checkpoint_blobs():
    """Two real checkpoints (epochs 1 and 2) of a lenet trained by fit()."""
    dataset = tiny_dataset()
    spec = JobSpec(model="lenet", dataset="fake", device="cpu", hyperparameters={
        "epochs": 2, "batch_size": 4, "optimizer": "adam", "lr": 0.01}).resolved()
    torch.manual_seed(0)
    model = models.build("lenet", dataset.shape, len(dataset.classes))
    files = []

    def on_epoch_end(end):
        buf = io.BytesIO()
        torch.save(build(end, spec, dataset), buf)
        files.append(buf.getvalue())

    fit(model, dataset, Hyperparameters(**spec["hyperparameters"]), torch.device("cpu"),
        RunControl(on_epoch_end=on_epoch_end))
    return dataset, files


def put(store: LocalArtifactStore, key: str, data: bytes) -> str:
    size, sha = store.save(key, lambda f: f.write(data))
    assert sha == hashlib.sha256(data).hexdigest()
    return sha


def test_get_loads_a_checkpoint_and_caches_it(tmp_path, checkpoint_blobs):
    dataset, files = checkpoint_blobs
    store = LocalArtifactStore(tmp_path)
    key = checkpoint_key("job1", 2)
    sha = put(store, key, files[1])
    predictor = Predictor(store, capacity=4)
    loaded = predictor.get("job1", key, sha)
    assert loaded.classes == ["ant", "bee", "cat", "dog"]
    assert loaded.shape == (1, 8, 8) and loaded.epoch == 2
    assert loaded.mean.shape == (1, 1, 1, 1) and loaded.std.shape == (1, 1, 1, 1)
    assert loaded.mean.flatten().tolist() == pytest.approx(dataset.mean)
    assert loaded.std.flatten().tolist() == pytest.approx(dataset.std)
    assert not loaded.model.training
    assert predictor.get("job1", key, sha) is loaded

    # it predicts what the training data's normalisation gives
    image = Image.fromarray(dataset.test.images[0, 0].numpy(), mode="L")
    predictions, = Predictor.predict(loaded, [image], top_k=4)
    with torch.no_grad():
        x = normalize(dataset.test.images[:1], loaded.mean, loaded.std)
        expected = torch.softmax(loaded.model(x), dim=1)[0]
    assert [p["probability"] for p in predictions] == pytest.approx(
        sorted(expected.tolist(), reverse=True), abs=1e-6)


def test_capacity_one_evicts_the_older_model(tmp_path, checkpoint_blobs):
    _, files = checkpoint_blobs
    store = LocalArtifactStore(tmp_path)
    keys = [checkpoint_key("job1", 1), checkpoint_key("job1", 2)]
    shas = [put(store, k, data) for k, data in zip(keys, files)]
    predictor = Predictor(store, capacity=1)
    first = predictor.get("job1", keys[0], shas[0])
    assert predictor.get("job1", keys[0], shas[0]) is first
    second = predictor.get("job1", keys[1], shas[1])
    assert second is not first and second.epoch == 2
    assert predictor.get("job1", keys[1], shas[1]) is second
    again = predictor.get("job1", keys[0], shas[0])  # evicted: loaded anew
    assert again is not first and again.epoch == 1
    assert predictor.get("job1", keys[1], shas[1]) is not second


def test_capacity_two_keeps_the_recently_used(tmp_path, checkpoint_blobs):
    _, files = checkpoint_blobs
    store = LocalArtifactStore(tmp_path)
    keys = [checkpoint_key(j, 1) for j in ("a", "b", "c")]
    shas = [put(store, k, files[0]) for k in keys]
    predictor = Predictor(store, capacity=2)
    a = predictor.get("a", keys[0], shas[0])
    b = predictor.get("b", keys[1], shas[1])
    assert predictor.get("a", keys[0], shas[0]) is a  # a is now the most recent
    predictor.get("c", keys[2], shas[2])  # evicts b, the least recently used
    assert predictor.get("a", keys[0], shas[0]) is a
    assert predictor.get("b", keys[1], shas[1]) is not b


def test_a_rewritten_file_with_a_new_sha_is_reloaded(tmp_path, checkpoint_blobs):
    _, files = checkpoint_blobs
    store = LocalArtifactStore(tmp_path)
    key = checkpoint_key("job1", 1)
    old_sha = put(store, key, files[0])
    predictor = Predictor(store, capacity=4)
    old = predictor.get("job1", key, old_sha)
    new_sha = put(store, key, files[1])  # the same key, rewritten (a re-run epoch)
    assert new_sha != old_sha
    new = predictor.get("job1", key, new_sha)
    assert new is not old and new.epoch == 2
    expected = torch.load(io.BytesIO(files[1]), weights_only=True)["model_state"]
    state = new.model.state_dict()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert predictor.get("job1", key, new_sha) is new


def test_weights_that_do_not_fit_the_architecture_are_a_checkpoint_error(tmp_path,
                                                                           checkpoint_blobs):
    """A checkpoint another version of an architecture wrote: the routes' 409, not a 500."""
    from core.checkpoint_format import CheckpointError

    _, files = checkpoint_blobs
    blob = torch.load(io.BytesIO(files[0]), weights_only=True)
    blob["model_state"] = {f"renamed.{k}": v for k, v in blob["model_state"].items()}
    buf = io.BytesIO()
    torch.save(blob, buf)
    store = LocalArtifactStore(tmp_path)
    key = checkpoint_key("job1", 1)
    sha = put(store, key, buf.getvalue())
    with pytest.raises(CheckpointError, match=r"^its weights do not fit lenet as this server "
                                              r"builds it: Error\(s\) in loading state_dict"):
        Predictor(store, capacity=1).get("job1", key, sha)
