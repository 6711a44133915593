"""A tenant's own architecture as torch.export programs (.pt2): checked, then loaded, without
ever running code from the file.

torch.export.load is never called: it unpickles the archive's sample inputs and any pickled
weights with weights_only=False, sympifies (evaluates) its size expressions and runs its
guards as Python. check_archive reads only the zip's headers, the graph JSON and the weight
configs (core.program_zip, core.program_graph, core.program_signature, core.program_weights)
and has torch build the graph on meta tensors; load_checked repeats every check on the same
open file and builds the weights from their raw bytes. A program model is a pair (one
exported in train mode, one in eval mode, check_pair) or a lone program with no
mode-dependent op (check_single); models.program_pair.ProgramPair trains it.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from pathlib import Path

from core.program_graph import check_graph
from core.program_limits import ProgramLimits, ProgramRejected
from core.program_loader import deserialize
from core.program_signature import Signature, check_signature
from core.program_weights import WeightPlan, check_weights, read_tensors
from core.program_zip import ProgramZip

__all__ = ["ProgramInfo", "ProgramLimits", "ProgramRejected", "check_archive", "check_pair",
           "check_single", "load_checked", "load_checked_pair"]


@dataclass(frozen=True)
class ProgramInfo:
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int  # K
    parameters: dict[str, tuple[int, ...]]  # name -> shape, in the signature's order
    buffers: dict[str, tuple[int, ...]]
    ops: list[str]  # sorted: aten.conv2d.default, ...
    mode_dependent_ops: list[str]  # sorted; a lone program must have none
    parameter_count: int


def _inspect(zf: ProgramZip, limits: ProgramLimits) -> tuple[ProgramInfo, dict, Signature,
                                                             WeightPlan]:
    document = zf.read_json(f"models/{zf.model}.json", limits.max_graph_bytes)
    module, ops = check_graph(document)
    signature = check_signature(document, module)
    plan = check_weights(zf, signature, limits)
    info = ProgramInfo(
        input_shape=signature.input_shape, num_classes=signature.num_classes,
        parameters=dict(signature.parameters), buffers=dict(signature.buffers),
        ops=ops.ops, mode_dependent_ops=ops.mode_dependent,
        parameter_count=sum(prod(shape) for shape in signature.parameters.values()))
    return info, document, signature, plan


def _open(path: Path | str, limits: ProgramLimits, field: str, load: bool):
    try:
        with ProgramZip(path, limits) as zf:
            info, document, signature, plan = _inspect(zf, limits)
            state, constants = read_tensors(zf, plan, signature, on_meta=not load)
            return info, deserialize(document, state, constants)
    except ProgramRejected as exc:
        exc.field = field
        raise
    except (TypeError, AttributeError, KeyError, IndexError, ValueError, RecursionError) as exc:
        # A JSON value of another type than torch.export writes, somewhere the checks
        # read it: still the file's fault, never a 500.
        raise ProgramRejected("the archive's graph or weights config is malformed "
                              f"({type(exc).__name__}: {str(exc)[:100]})", field) from None


def check_archive(path: Path | str, limits: ProgramLimits = ProgramLimits(),
                  field: str = "file") -> ProgramInfo:
    """What the program takes, gives and holds; ProgramRejected (naming `field`) saying why
    it cannot be taken. Reads no weight: torch builds the graph on meta tensors."""
    return _open(path, limits, field, load=False)[0]


def load_checked(path: Path | str, limits: ProgramLimits = ProgramLimits(),
                 field: str = "file"):
    """The torch.export.ExportedProgram of a file, checked again as check_archive does; the
    only way trainhub deserialises a program. Its sample inputs are never read."""
    return _open(path, limits, field, load=True)[1]


def _shapes_differ(what: str, train: dict, eval_: dict) -> str | None:
    if train == eval_:
        return None
    missing, extra = sorted(set(train) - set(eval_)), sorted(set(eval_) - set(train))
    reshaped = sorted(n for n in set(train) & set(eval_) if train[n] != eval_[n])
    parts = ([f"missing {', '.join(missing[:5])}"] if missing else []) + (
        [f"extra {', '.join(extra[:5])}"] if extra else []) + [
        f"{n} is {train[n]} in train mode, {eval_[n]} in eval mode" for n in reshaped[:3]]
    more = len(reshaped) - 3
    return (f"its {what} differ from the train-mode program's: " + "; ".join(parts)
            + (f" (and {more} more)" if more > 0 else ""))


def check_pair(train: ProgramInfo, eval_: ProgramInfo) -> None:
    """ProgramRejected (field eval_file) unless both programs are one module exported in
    two modes: the same parameter and buffer names and shapes, input and output."""
    problems = [p for p in (_shapes_differ("parameters", train.parameters, eval_.parameters),
                            _shapes_differ("buffers", train.buffers, eval_.buffers)) if p]
    if train.input_shape != eval_.input_shape:
        problems.append(f"it takes {eval_.input_shape} images, the train-mode program "
                        f"{train.input_shape}")
    if train.num_classes != eval_.num_classes:
        problems.append(f"it gives {eval_.num_classes} classes, the train-mode program "
                        f"{train.num_classes}")
    if problems:
        raise ProgramRejected("the eval-mode program is not the train-mode program's module: "
                              + "; ".join(problems), field="eval_file")


def check_single(info: ProgramInfo) -> None:
    """ProgramRejected unless a lone program can serve both modes (no mode-dependent op)."""
    if info.mode_dependent_ops:
        raise ProgramRejected(
            "this program behaves differently in train and eval mode ("
            + ", ".join(info.mode_dependent_ops) + "): export the module in both modes and "
            "upload the eval-mode program as eval_file beside it")


def load_checked_pair(train_path: Path | str, eval_path: Path | str | None = None,
                      limits: ProgramLimits = ProgramLimits()):
    """(train program, eval program or None), each loaded as load_checked does, and checked
    as a pair (check_pair) or as a lone program (check_single)."""
    train_info, train = _open(train_path, limits, "file", load=True)
    if eval_path is None:
        check_single(train_info)
        return train, None
    eval_info, eval_program = _open(eval_path, limits, "eval_file", load=True)
    check_pair(train_info, eval_info)
    return train, eval_program
