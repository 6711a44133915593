"""torch's own deserialiser run on a checked graph, with tensors trainhub built itself.

The only pieces of torch.export.load that trainhub uses: torch.export.load itself would
unpickle the sample inputs and any pickled weights with weights_only=False, and keep the
graph's guards (Python that ExportedProgram.module() runs)."""
from __future__ import annotations

import operator
import threading

from core.program_limits import ProgramRejected
from core.program_ops import ALLOWED_ATEN_PACKETS, ALLOWED_OPERATORS

# torch's GraphModuleDeserializer keeps its state in a module global and refuses a second
# deserialisation while one runs: the API checks uploads in threads.
_DESERIALIZING = threading.Lock()


def _check_loaded_ops(program) -> None:
    """The graph torch built holds the allowed ops as torch resolved them, and no other
    kind of node (submodule calls, attributes)."""
    import torch

    operators = {getattr(operator, name.split(".")[1]) for name in ALLOWED_OPERATORS}
    for node in program.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        target = node.target
        if node.op != "call_function":
            raise ProgramRejected(f"the graph holds a {node.op} node ({node.name})")
        if target in operators:
            continue
        if not (isinstance(target, torch._ops.OpOverload) and target.namespace == "aten"
                and target._opname in ALLOWED_ATEN_PACKETS):
            raise ProgramRejected(f"the graph holds an op that is not allowed: {target}")


def _zero_uninitialised(program) -> None:
    """aten.empty and its kin hand out memory as the allocator left it (in a worker, maybe
    another job's tensors): the graph gets zero-filled tensors instead (stochastic depth's
    noise, the one use export emits, is filled by bernoulli_ anyway)."""
    import torch

    aten = torch.ops.aten
    zeros = {aten.empty.memory_format: aten.zeros.default,
             aten.empty_like.default: aten.zeros_like.default,
             aten.new_empty.default: aten.new_zeros.default}
    changed = False
    for node in program.graph.nodes:
        if node.op == "call_function" and node.target in zeros:
            node.target = zeros[node.target]
            if node.target is aten.zeros.default:  # it takes no memory_format
                node.kwargs = {k: v for k, v in node.kwargs.items() if k != "memory_format"}
            changed = True
    if changed:
        program.graph_module.recompile()


def deserialize(document: dict, state: dict, constants: dict):
    """An ExportedProgram from the checked document and the tensors, its uninitialised
    tensors zero-filled; ProgramRejected with torch's reason when torch cannot build it
    (another torch's schema, say)."""
    from torch._export.serde import schema
    from torch._export.serde.serialize import (
        ExportedProgramDeserializer,
        _dict_to_dataclass,
    )

    try:
        with _DESERIALIZING:
            serialized = _dict_to_dataclass(schema.ExportedProgram, document)
            program = ExportedProgramDeserializer().deserialize(serialized, state, constants,
                                                                None)
    except ProgramRejected:
        raise
    except Exception as exc:  # torch's deserialiser raises many kinds on a bad graph
        raise ProgramRejected("torch cannot load the program's graph: "
                              f"{type(exc).__name__}: {str(exc)[:300]}") from None
    _check_loaded_ops(program)
    _zero_uninitialised(program)
    return program
