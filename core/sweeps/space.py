"""A sweep's search space: a map from a job-spec path to one distribution, and the values of
trial n, which depend on the sweep's seed and n alone (grid: the n-th point of the grid)."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from core.errors import FieldError

KINDS = ("uniform", "loguniform", "int_uniform", "choice", "grid")
DISCRETE = ("choice", "grid")


@dataclass(frozen=True)
class Distribution:
    kind: str
    args: tuple  # (low, high) for the ranges; the values for choice and grid

    def sample(self, rng: random.Random) -> Any:
        if self.kind in DISCRETE:
            return self.args[rng.randrange(len(self.args))]
        low, high = self.args
        if self.kind == "int_uniform":
            return rng.randint(low, high)
        if self.kind == "loguniform":
            return math.exp(rng.uniform(math.log(low), math.log(high)))
        return rng.uniform(low, high)

    def extremes(self) -> tuple:
        """Every value a trial can take at the edges: the bounds, or each listed value."""
        return self.args


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse(path: str, raw: Any) -> Distribution:
    """The distribution `raw` describes, or FieldError naming space.<path> and what is
    allowed."""
    field = f"space.{path}"
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in KINDS:
        raise FieldError(field, "a distribution is an object with one key: "
                                f"{', '.join(KINDS)} (e.g. {{\"loguniform\": [0.0001, 0.3]}})")
    kind, args = next(iter(raw.items()))
    if not isinstance(args, list):
        raise FieldError(field, f"{kind} takes a list")
    if kind in DISCRETE:
        if not args:
            raise FieldError(field, f"{kind} needs at least one value; got an empty list")
        if len(args) > 1000:
            raise FieldError(field, f"{kind} takes at most 1000 values; got {len(args)}")
        return Distribution(kind, tuple(args))
    if len(args) != 2 or not all(_number(a) for a in args):
        raise FieldError(field, f"{kind} takes [low, high], two finite numbers")
    low, high = args
    if low > high:
        raise FieldError(field, f"{kind}'s low ({low}) is above its high ({high})")
    if kind == "int_uniform" and not all(float(a).is_integer() for a in args):
        raise FieldError(field, f"int_uniform takes two integers; got [{low}, {high}]")
    if kind == "int_uniform":
        low, high = int(low), int(high)
    if kind == "loguniform" and low <= 0:
        raise FieldError(field, f"loguniform's low must be above 0; got {low}")
    return Distribution(kind, (low, high))


class Space:
    """The parsed space, its paths in sorted order (the order values are drawn in)."""

    def __init__(self, raw: dict[str, Any]):
        self.dists = {path: parse(path, raw[path]) for path in sorted(raw)}

    def grid_size(self) -> int:
        return math.prod(len(d.args) for d in self.dists.values())

    def check_grid(self) -> None:
        for path, dist in self.dists.items():
            if dist.kind not in DISCRETE:
                raise FieldError(f"space.{path}", "strategy grid needs a finite set of values: "
                                 f"use grid or choice, not {dist.kind}")

    def values(self, strategy: str, seed: int, trial: int) -> dict[str, Any]:
        """Trial `trial`'s values by path: the grid's point of that number (the last path
        varies fastest), else draws from a generator seeded by (seed, trial) alone."""
        if strategy == "grid":
            point, rest = {}, trial
            for path in reversed(list(self.dists)):
                values = self.dists[path].args
                point[path] = values[rest % len(values)]
                rest //= len(values)
            return {path: point[path] for path in self.dists}
        # A string seed is hashed with SHA-512 by random.Random: the same in every process.
        rng = random.Random(f"trainhub-sweep:{seed}:{trial}")
        return {path: dist.sample(rng) for path, dist in self.dists.items()}


def set_path(spec: dict, path: str, value: Any) -> dict:
    """A copy of spec with `value` at the dotted path (objects on the way are copied)."""
    head, _, rest = path.partition(".")
    out = dict(spec)
    if rest:
        inner = out.get(head)
        out[head] = set_path(inner if isinstance(inner, dict) else {}, rest, value)
    else:
        out[head] = value
    return out
