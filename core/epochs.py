"""How many mini-batches an epoch has: the loop and the API's progress count alike."""
from __future__ import annotations


def validation_size(n: int, fraction: float) -> int:
    """Images held out of n for validation: round(n * fraction), at least one when asked."""
    return max(1, int(round(n * fraction))) if fraction > 0 else 0


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def steps_per_epoch(train_size: int, batch_size: int, validation_fraction: float) -> int:
    """Mini-batches per epoch, counted as the loop counts them."""
    return num_batches(train_size - validation_size(train_size, validation_fraction), batch_size)
