"""What can be trained: built-in datasets and their shapes (no torch needed to read it)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    shape: tuple[int, int, int]  # (channels, height, width)
    classes: tuple[str, ...]
    train_size: int
    test_size: int
    # torchvision's folder under TRAINHUB_DATASET_ROOT, or None for in-process datasets.
    folder: str | None = None
    files: tuple[str, ...] = field(default=())


DIGITS = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

BUILTIN_DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("digits", "scikit-learn's bundled 8x8 handwritten digits (real, offline); "
                    "test split = train_test_split(test_size=0.2, stratify=y, random_state=0)",
                    (1, 8, 8), DIGITS, 1437, 360),
        DatasetInfo("fake", "torchvision FakeData: random 32x32 RGB images, 10 classes, "
                    "for smoke and speed tests", (3, 32, 32),
                    tuple(f"class_{i}" for i in range(10)), 1000, 200),
        DatasetInfo("mnist", "MNIST handwritten digits (torchvision)", (1, 28, 28), DIGITS,
                    60000, 10000, "MNIST/raw", MNIST_FILES),
        DatasetInfo("fashion_mnist", "Fashion-MNIST clothing images (torchvision)",
                    (1, 28, 28), FASHION_CLASSES, 60000, 10000, "FashionMNIST/raw", MNIST_FILES),
        DatasetInfo("cifar10", "CIFAR-10 (torchvision), the tutorial's dataset", (3, 32, 32),
                    CIFAR10_CLASSES, 50000, 10000, "cifar-10-batches-py",
                    ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                     "data_batch_5", "test_batch", "batches.meta")),
    )
}
DATASET_NAMES = tuple(BUILTIN_DATASETS)
