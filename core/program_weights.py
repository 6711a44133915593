"""A program's weights and tensor constants: checked from their configs, then read raw.

The configs must match the graph's signature and hold raw little-endian tensors only
(`use_pickle` and custom objects are refused); the bytes they declare count against the
budget before any is read; each storage is then read once into the tensors that view it."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from core.program_graph import union
from core.program_limits import ProgramLimits, ProgramRejected
from core.program_signature import STRIDED, Signature
from core.program_zip import ProgramZip

# torch._export.serde.schema.ScalarType -> (torch dtype, bytes per element).
DTYPES = {1: ("uint8", 1), 2: ("int8", 1), 3: ("int16", 2), 4: ("int32", 4), 5: ("int64", 8),
          6: ("float16", 2), 7: ("float32", 4), 8: ("float64", 8), 12: ("bool", 1),
          13: ("bfloat16", 2)}
_FILES = {"weights": (re.compile(r"weight_[0-9]+"), "data/weights/"),
          "constants": (re.compile(r"tensor_[0-9]+"), "data/constants/")}


@dataclass(frozen=True)
class Payload:
    entry: str  # the storage it views: data/weights/weight_3
    dtype: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int
    requires_grad: bool


@dataclass
class WeightPlan:
    weights: dict[str, Payload] = field(default_factory=dict)  # parameters, persistent buffers
    constants: dict[str, Payload] = field(default_factory=dict)  # the other buffers, constants
    storages: dict[str, int] = field(default_factory=dict)  # entry -> dtype
    declared_bytes: int = 0


def _ints(values: object, what: str) -> tuple[int, ...]:
    out = []
    for value in values if isinstance(values, list) else [None]:
        kind, number = union(value, what)
        if kind != "as_int" or type(number) is not int or number < 0:
            raise ProgramRejected(f"{what} is not a list of sizes")
        out.append(number)
    return tuple(out)


def _payload(fqn: str, meta: object, part: str) -> Payload:
    pattern, folder = _FILES[part]
    if not isinstance(meta, dict):
        raise ProgramRejected(f"the archive's {part} config is malformed ({fqn})")
    if meta.get("use_pickle") is not False:
        raise ProgramRejected(f"{fqn} is stored as a pickle (use_pickle); trainhub takes raw "
                              "tensors only (no tensor subclasses)")
    path, tensor = meta.get("path_name"), meta.get("tensor_meta")
    if not isinstance(path, str) or not pattern.fullmatch(path):
        raise ProgramRejected(f"{fqn} is stored as {str(path)[:40]!r}, not a raw tensor")
    if not isinstance(tensor, dict) or tensor.get("dtype") not in DTYPES:
        raise ProgramRejected(f"{fqn} has no tensor type, or one trainhub does not take")
    if tensor.get("layout") != STRIDED:
        raise ProgramRejected(f"{fqn} is not a dense (strided) tensor")
    shape = _ints(tensor.get("sizes"), f"{fqn}'s shape")
    strides = _ints(tensor.get("strides"), f"{fqn}'s strides")
    (offset,) = _ints([tensor.get("storage_offset")], f"{fqn}'s storage offset")
    if len(strides) != len(shape):
        raise ProgramRejected(f"{fqn}'s strides do not match its shape")
    return Payload(folder + path, tensor["dtype"], shape, strides, offset,
                   tensor.get("requires_grad") is True)


def _needed_bytes(p: Payload) -> int:
    if 0 in p.shape:
        return 0
    last = p.offset + sum((size - 1) * stride for size, stride in zip(p.shape, p.strides))
    return (last + 1) * DTYPES[p.dtype][1]


def _read_config(zf: ProgramZip, part: str, limits: ProgramLimits) -> dict:
    config = zf.read_json(f"data/{part}/{zf.model}_{part}_config.json", limits.max_graph_bytes)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise ProgramRejected(f"the archive's {part} config is malformed")
    return {fqn: _payload(str(fqn)[:200], meta, part) for fqn, meta in entries.items()}


def check_weights(zf: ProgramZip, signature: Signature, limits: ProgramLimits) -> WeightPlan:
    plan = WeightPlan(_read_config(zf, "weights", limits), _read_config(zf, "constants", limits))
    needed: dict[str, int] = {}
    for fqn, p in {**plan.weights, **plan.constants}.items():
        needed[p.entry] = max(needed.get(p.entry, 0), _needed_bytes(p))
        if plan.storages.setdefault(p.entry, p.dtype) != p.dtype:
            raise ProgramRejected(f"{fqn} views {p.entry} as another type than its other "
                                  "tensors do")
    plan.declared_bytes = sum(needed.values())
    if plan.declared_bytes > limits.max_unpacked_bytes:
        raise ProgramRejected(f"the program declares {plan.declared_bytes} bytes of weights; "
                              f"the limit is {limits.max_unpacked_bytes} "
                              "(TRAINHUB_PROGRAM_MAX_UNPACKED_BYTES)")
    shapes = {**signature.parameters, **signature.buffers, **signature.constants}
    stored = {n for n in signature.buffers if n not in signature.persistent}
    expected = {"weights": set(signature.parameters) | signature.persistent,
                "constants": stored | set(signature.constants)}
    for part, payloads in (("weights", plan.weights), ("constants", plan.constants)):
        if set(payloads) != expected[part]:
            odd = sorted(set(payloads) ^ expected[part])[:5]
            raise ProgramRejected(f"the archive's {part} do not match its graph's signature "
                                  f"({', '.join(odd)})")
        for fqn, p in payloads.items():
            if p.shape != shapes[fqn]:
                raise ProgramRejected(f"{fqn} is stored as {p.shape}; the graph takes "
                                      f"{shapes[fqn]}")
    unread = sorted(name for name in zf.entries if name.startswith(("data/weights/weight_",
                    "data/constants/tensor_")) and name not in needed)
    if unread:
        raise ProgramRejected(f"the archive holds {unread[0]}, which its configs do not name")
    for entry, nbytes in needed.items():
        if entry not in zf.entries:
            raise ProgramRejected(f"the archive has no {entry}")
        size, element = zf.size(entry), DTYPES[plan.storages[entry]][1]
        if size < nbytes or size % element:
            raise ProgramRejected(f"{entry} holds {size} bytes; its tensors need {nbytes}")
    return plan


def _tensor(storage, p: Payload, is_parameter: bool):
    import torch

    tensor = torch.as_strided(storage, p.shape, p.strides, p.offset)
    return torch.nn.Parameter(tensor, requires_grad=p.requires_grad) if is_parameter else tensor


def read_tensors(zf: ProgramZip, plan: WeightPlan, signature: Signature,
                 on_meta: bool = False) -> tuple[dict, dict]:
    """(state_dict, constants) as torch.export's loader would build them, from raw bytes
    (or, on_meta, as shapes alone: nothing read)."""
    import torch

    storages = {}
    for entry, code in plan.storages.items():
        dtype = getattr(torch, DTYPES[code][0])
        count = zf.size(entry) // DTYPES[code][1]
        if on_meta:
            storages[entry] = torch.empty(count, dtype=dtype, device="meta")
        elif count:
            storages[entry] = torch.frombuffer(zf.read(entry, zf.size(entry)), dtype=dtype)
        else:
            storages[entry] = torch.empty(0, dtype=dtype)
    state = {fqn: _tensor(storages[p.entry], p, fqn in signature.parameters)
             for fqn, p in plan.weights.items()}
    constants = {fqn: _tensor(storages[p.entry], p, False) for fqn, p in plan.constants.items()}
    return state, constants
