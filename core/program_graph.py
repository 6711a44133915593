"""A program's graph (its models/<name>.json) checked as data, before torch reads any of it.

Every node's op is on core.program_ops' allow-list; every argument is a plain value, a
tensor or a size (no nested graphs, custom objects or operator handles); every name that
torch.fx writes into the Python it generates for the graph is an identifier, and every size
expression passes core.program_exprs. Then the parts torch would turn into code without
these checks are dropped: `guards_code` (Python that ExportedProgram.module() runs), the
nodes' metadata (stack traces, source functions) and the submodules' call entries.
"""
from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

from core.program_exprs import check_expression
from core.program_limits import ProgramRejected
from core.program_ops import (
    ALLOWED_OPERATORS,
    MODE_DEPENDENT_PACKETS,
    aten_packet,
    is_allowed,
    op_label,
)

_FQN_PART = re.compile(r"[A-Za-z0-9_-]+")  # regnet names its blocks block1-0
_VALUE_ARGUMENTS = frozenset(
    "as_none as_int as_ints as_float as_floats as_string as_strings as_scalar_type "
    "as_memory_format as_layout as_device as_bool as_bools".split())
_TENSOR_ARGUMENTS = frozenset(
    "as_tensor as_tensors as_optional_tensor as_optional_tensors as_sym_int as_sym_ints "
    "as_sym_bool as_sym_bools as_sym_float as_sym_floats".split())
_DEVICES = frozenset({"cpu", "cuda"})
_NAMED_VALUES = ("tensor_values", "sym_int_values", "sym_bool_values", "sym_float_values")
_MAX_STRING = 256


def check_identifier(name: object, what: str = "name") -> str:
    """A name torch.fx may write into generated Python as it stands."""
    if not (isinstance(name, str) and name.isidentifier() and len(name) <= _MAX_STRING
            and not keyword.iskeyword(name) and not name.startswith("__")):
        raise ProgramRejected(f"the graph holds a {what} that is not a plain identifier: "
                              f"{str(name)[:80]!r}")
    return name


def check_fqn(name: object, what: str) -> str:
    """A parameter's or buffer's dotted name (features.0.weight)."""
    if not (isinstance(name, str) and 0 < len(name) <= 4 * _MAX_STRING and all(
            _FQN_PART.fullmatch(p) and not p.startswith("__") for p in name.split("."))):
        raise ProgramRejected(f"the program holds a {what} named {str(name)[:80]!r}")
    return name


def union(value: object, what: str) -> tuple[str, object]:
    """torch.export's tagged unions: {"as_tensor": {...}} -> ("as_tensor", {...})."""
    if not (isinstance(value, dict) and len(value) == 1):
        raise ProgramRejected(f"the graph's {what} is not in torch.export's format")
    return next(iter(value.items()))


def _walk_expressions_and_names(value: object) -> None:
    """Every size expression and every argument name, wherever in the graph they are."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if key == "expr_str":
                    check_expression(child)
                elif key in ("name", "as_name") and isinstance(child, str):
                    check_identifier(child)
                elif isinstance(child, (dict, list)):
                    stack.append(child)
        elif isinstance(item, list):
            stack.extend(c for c in item if isinstance(c, (dict, list)))


def _check_argument(argument: object, where: str) -> None:
    kind, value = union(argument, f"argument of {where}")
    if kind in _TENSOR_ARGUMENTS:
        return
    if kind not in _VALUE_ARGUMENTS:
        raise ProgramRejected(f"{where} takes an argument of kind {kind}; only tensors, sizes "
                              "and plain values are taken (no subgraphs, custom objects or "
                              "operator handles)")
    strings = value if kind == "as_strings" else [value] if kind == "as_string" else []
    if any(not isinstance(s, str) or len(s) > _MAX_STRING for s in strings):
        raise ProgramRejected(f"{where} takes a string argument that is too long")
    if kind == "as_device" and (not isinstance(value, dict) or value.get("type") not in _DEVICES):
        raise ProgramRejected(f"{where} names a device other than cpu or cuda")


def _sdpa_dropout(node: dict) -> bool:
    for named in node.get("inputs") or []:
        if isinstance(named, dict) and named.get("name") == "dropout_p":
            kind, value = union(named.get("arg"), "dropout_p")
            return kind == "as_float" and isinstance(value, (int, float)) and value > 0
    return False


@dataclass
class GraphOps:
    ops: list[str]  # sorted: aten.conv2d.default, ...
    mode_dependent: list[str]  # the ops whose behaviour the export's mode froze


def check_nodes(graph: dict) -> GraphOps:
    """The nodes' ops and arguments; ProgramRejected naming every op that is not allowed."""
    nodes = graph.get("nodes")
    if not isinstance(nodes, list):
        raise ProgramRejected("the graph holds no list of nodes")
    ops, refused, mode_dependent = set(), set(), set()
    for node in nodes:
        target = node.get("target") if isinstance(node, dict) else None
        if not isinstance(target, str):
            raise ProgramRejected("the graph holds a node without an op")
        label = op_label(target)[:120]
        if not is_allowed(target):
            refused.add(label)
            continue
        ops.add(label)
        packet = aten_packet(target)
        if packet in MODE_DEPENDENT_PACKETS or (
                packet == "scaled_dot_product_attention" and _sdpa_dropout(node)):
            mode_dependent.add(label)
        if node.get("is_hop_single_tensor_return"):
            raise ProgramRejected(f"the graph's {label} is a higher-order op")
        for named in node.get("inputs") or []:
            if not isinstance(named, dict):
                raise ProgramRejected(f"the graph's {label} has a malformed argument")
            _check_argument(named.get("arg"), label)
        for output in node.get("outputs") or []:
            if union(output, f"output of {label}")[0] not in _TENSOR_ARGUMENTS | {"as_none"}:
                raise ProgramRejected(f"the graph's {label} returns something other than "
                                      "tensors or sizes")
    if refused:
        outside = sorted(op for op in refused if not op.startswith("aten.")
                         and op not in ALLOWED_OPERATORS)
        raise ProgramRejected(
            "the graph holds ops that are not allowed: " + ", ".join(sorted(refused)[:20])
            + (" (outside torch.ops.aten)" if outside else "")
            + "; allowed: the aten ops docs/concepts.md lists")
    return GraphOps(sorted(ops), sorted(mode_dependent))


def check_graph(document: object) -> tuple[dict, GraphOps]:
    """The graph module's parts once its nodes, names and expressions passed; ProgramRejected
    otherwise. The document is cleaned in place of everything torch would run as code."""
    if not isinstance(document, dict) or not isinstance(document.get("graph_module"), dict):
        raise ProgramRejected("not a torch.export archive: its graph has no graph_module")
    module = document["graph_module"]
    graph = module.get("graph")
    if not isinstance(graph, dict):
        raise ProgramRejected("not a torch.export archive: its graph_module has no graph")
    if graph.get("custom_obj_values"):
        raise ProgramRejected("the graph holds custom objects; only tensors are taken")
    verifiers = document.get("verifiers") or []
    if not isinstance(verifiers, list) or not set(verifiers) <= {"TRAINING", "ATEN"}:
        raise ProgramRejected(f"the graph's dialect {verifiers!r} is not TRAINING or ATEN")
    _walk_expressions_and_names(document)
    for field in _NAMED_VALUES:
        values = graph.get(field) or {}
        if not isinstance(values, dict):
            raise ProgramRejected(f"the graph's {field} is not in torch.export's format")
        for name in values:
            check_identifier(name)
    for node in graph.get("nodes") or []:
        if isinstance(node, dict):
            node["metadata"] = {}
    ops = check_nodes(graph)
    document["guards_code"] = []
    module["metadata"], module["treespec_namedtuple_fields"] = {}, {}
    return module, ops
