"""What a program takes and gives, from its graph signature.

One float image batch (N, C, H, W) with a dynamic, unbounded N; one output (N, K); besides
them only parameters, buffers and tensor constants (no custom objects, tokens or mutated
inputs)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from core.program_exprs import SYMBOL_NAME
from core.program_graph import check_fqn, check_identifier, union
from core.program_limits import ProgramRejected

FLOAT32 = 7  # torch._export.serde.schema.ScalarType.FLOAT
STRIDED = 7  # schema.Layout.Strided
# pytree's spec of export's (args, kwargs) for forward(x), and of one tensor returned.
_IN_SPEC = {"type": "builtins.tuple", "context": "null", "children_spec": [
    {"type": "builtins.tuple", "context": "null", "children_spec": [
        {"type": None, "context": None, "children_spec": []}]},
    {"type": "builtins.dict", "context": "[]", "children_spec": []}]}
_OUT_SPEC = {"type": None, "context": None, "children_spec": []}
_REFUSED_INPUTS = {"custom_obj": "a custom object", "token": "a side-effect token",
                   "constant_input": "a constant (non-tensor) input"}
_REFUSED_OUTPUTS = {"loss_output": "a loss", "gradient_to_parameter": "gradients",
                    "gradient_to_user_input": "gradients", "user_input_mutation":
                    "a change to its input", "parameter_mutation": "a change to a parameter",
                    "token": "a side-effect token"}


@dataclass
class Signature:
    input_shape: tuple[int, int, int]
    num_classes: int
    parameters: dict[str, tuple[int, ...]] = field(default_factory=dict)
    buffers: dict[str, tuple[int, ...]] = field(default_factory=dict)
    persistent: set[str] = field(default_factory=set)  # buffers a state_dict holds
    constants: dict[str, tuple[int, ...]] = field(default_factory=dict)


def _symbol(size: object) -> str | None:
    kind, value = union(size, "size")
    if kind == "as_int":
        return None
    expr = value.get("expr_str") if isinstance(value, dict) else None
    return expr if isinstance(expr, str) and expr.startswith("Symbol(") else "?"


def _static_shape(meta: object, what: str) -> tuple[int, ...]:
    sizes = meta.get("sizes") if isinstance(meta, dict) else None
    if not isinstance(sizes, list):
        raise ProgramRejected(f"the graph has no shape for {what}")
    shape = []
    for size in sizes:
        kind, value = union(size, f"size of {what}")
        if kind != "as_int" or type(value) is not int or value < 0:
            raise ProgramRejected(f"{what} has a dynamic or malformed shape")
        shape.append(value)
    return tuple(shape)


def _spec_arg(spec: dict, what: str) -> str:
    arg = spec.get("arg") if isinstance(spec, dict) else None
    if isinstance(arg, dict) and "as_tensor" in arg:
        arg = arg["as_tensor"]
    if not isinstance(arg, dict):
        raise ProgramRejected(f"the graph's {what} is not a tensor")
    return check_identifier(arg.get("name"))


def _check_input(meta: dict, batch_ranges: dict) -> tuple[str, tuple[int, int, int]]:
    sizes = meta.get("sizes") if isinstance(meta, dict) else None
    if meta.get("dtype") != FLOAT32 or not isinstance(sizes, list) or len(sizes) != 4:
        raise ProgramRejected("the program's input must be one float32 image batch "
                              "(N, C, H, W)")
    batch = _symbol(sizes[0])
    if batch in (None, "?"):
        raise ProgramRejected("the program's batch dimension is not dynamic: export it with "
                              "dynamic_shapes=({0: torch.export.Dim('batch')},)")
    chw = _static_shape({"sizes": sizes[1:]}, "the input's (C, H, W)")
    if min(chw) < 1:
        raise ProgramRejected(f"the program's input (C, H, W) is {chw}")
    name = batch.split("'")[1]
    limits = batch_ranges.get(name) or {}
    if not isinstance(limits, dict) or limits.get("max_val") is not None or (
            limits.get("min_val") or 0) > 1:
        raise ProgramRejected("the program's batch dimension must take any batch size from "
                              f"1 up (its range is {limits}): use Dim('batch') without min "
                              "or max")
    return batch, chw


def _check_output(meta: dict, batch: str) -> int:
    sizes = meta.get("sizes") if isinstance(meta, dict) else None
    if meta.get("dtype") != FLOAT32 or not isinstance(sizes, list) or len(sizes) != 2:
        raise ProgramRejected("the program's output must be one float32 (N, K) tensor of "
                              "class scores")
    if _symbol(sizes[0]) != batch:
        raise ProgramRejected("the program's output's first dimension is not its input's "
                              "batch dimension")
    (classes,) = _static_shape({"sizes": sizes[1:]}, "the output's K")
    if classes < 1:
        raise ProgramRejected("the program's output has no classes")
    return classes


def _check_ranges(ranges: object) -> dict:
    """Symbols' ranges: plain integers or none (torch compares them with sympy's)."""
    if not isinstance(ranges, dict):
        raise ProgramRejected("the graph's range constraints are malformed")
    for name, bounds in ranges.items():
        if not (SYMBOL_NAME.fullmatch(name) and isinstance(bounds, dict) and all(
                bounds.get(k) is None or type(bounds.get(k)) is int
                for k in ("min_val", "max_val"))):
            raise ProgramRejected(f"the graph's range constraint for {str(name)[:40]!r} is "
                                  "malformed")
    return ranges


def _check_call_graph(module: dict) -> None:
    """Only the root entry is kept; it must call forward(x) and return one tensor."""
    entries = module.get("module_call_graph")
    root = next((e for e in entries or [] if isinstance(e, dict) and e.get("fqn") == ""), None)
    signature = root.get("signature") if root else None
    try:
        in_spec = json.loads(signature["in_spec"])
        out_spec = json.loads(signature["out_spec"])
    except (TypeError, KeyError, ValueError, RecursionError):
        raise ProgramRejected("the graph has no module call signature") from None
    if in_spec[1:] != [_IN_SPEC] or out_spec[1:] != [_OUT_SPEC]:
        raise ProgramRejected("the program must take one tensor (forward(self, x)) and "
                              "return one tensor, with no keyword arguments")
    for name in signature.get("forward_arg_names") or []:
        check_identifier(name, "forward argument")
    module["module_call_graph"] = [root]


def check_signature(document: dict, module: dict) -> Signature:
    graph, sig = module["graph"], module.get("signature")
    metas = graph.get("tensor_values") or {}
    specs = [union(s, "input spec") for s in (sig or {}).get("input_specs") or []]
    outs = [union(s, "output spec") for s in (sig or {}).get("output_specs") or []]
    users = [s for kind, s in specs if kind == "user_input"]
    results = [s for kind, s in outs if kind == "user_output"]
    if len(users) != 1 or len(results) != 1:
        raise ProgramRejected(f"the program takes {len(users)} inputs and returns "
                              f"{len(results)} outputs; it must take one image batch and "
                              "return one (N, K) tensor")
    ranges = _check_ranges(document.get("range_constraints") or {})
    batch, chw = _check_input(metas.get(_spec_arg(users[0], "input")) or {}, ranges)
    found = Signature(chw, _check_output(metas.get(_spec_arg(results[0], "output")) or {},
                                         batch))
    for kind, spec in specs:
        if kind in _REFUSED_INPUTS:
            raise ProgramRejected(f"the program takes {_REFUSED_INPUTS[kind]}; only tensors")
        if kind == "user_input":
            continue
        key = {"parameter": "parameter_name", "buffer": "buffer_name",
               "tensor_constant": "tensor_constant_name"}.get(kind)
        if key is None:
            raise ProgramRejected(f"the program's signature holds a {kind} input")
        name = check_fqn(spec.get(key), kind.replace("_", " "))
        shape = _static_shape(metas.get(_spec_arg(spec, name)), name)
        target = {"parameter": found.parameters, "buffer": found.buffers,
                  "tensor_constant": found.constants}[kind]
        if name in found.parameters or name in found.buffers or name in found.constants:
            raise ProgramRejected(f"the program's signature names {name} twice")
        target[name] = shape
        if kind == "buffer" and spec.get("persistent") is not False:
            found.persistent.add(name)
    for kind, spec in outs:
        if kind in _REFUSED_OUTPUTS:
            raise ProgramRejected(f"the program returns {_REFUSED_OUTPUTS[kind]}")
        if kind == "buffer_mutation" and spec.get("buffer_name") not in found.buffers:
            raise ProgramRejected("the program updates a buffer it does not take")
        if kind not in ("user_output", "buffer_mutation"):
            raise ProgramRejected(f"the program's signature holds a {kind} output")
    _check_call_graph(module)
    return found
