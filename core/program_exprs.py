"""The symbolic size expressions of a program's graph, checked before torch reads them.

torch.export writes a dynamic size as sympy's own text, e.g.
`Mul(Integer(16), Symbol('s77', positive=True, integer=True))`, and its deserialiser hands
that text to sympy.sympify, which evaluates it as Python: `__import__('os').system(...)`
there would run on load. So every expression must parse as a call tree of the sympy and
torch size functions below, over integer literals and Symbol('<letters><digits>', ...) with
boolean assumptions, and nothing else: no names, attributes, subscripts or other strings.
"""
from __future__ import annotations

import ast
import re

from core.program_limits import ProgramRejected

SYMBOL_NAME = re.compile(r"[a-z]+[0-9]+")
_MAX_LENGTH = 2000
_FUNCTIONS = frozenset(
    "Symbol Integer Rational Add Mul Pow Min Max Mod Abs Eq Ne Lt Le Gt Ge And Or Not "
    "FloorDiv CeilDiv ModularIndexing CleanDiv PythonMod IntTrueDiv FloatTrueDiv ToFloat "
    "TruncToFloat TruncToInt RoundToInt RoundDecimal FloorToInt CeilToInt Identity "
    "PowByNatural FloatPow Where".split())
_ASSUMPTIONS = frozenset("positive negative nonnegative nonpositive integer real finite "
                         "zero nonzero".split())


def _check_node(node: ast.AST) -> None:
    if isinstance(node, ast.Constant):
        if type(node.value) is not int:
            raise ValueError(f"the literal {node.value!r}")
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        _check_node(node.operand)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        if name not in _FUNCTIONS:
            raise ValueError(f"the function {name}")
        if name == "Symbol":
            first = node.args[0] if len(node.args) == 1 else None
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)
                    and SYMBOL_NAME.fullmatch(first.value)):
                raise ValueError("a Symbol that is not Symbol('<letters><digits>', ...)")
        else:
            for arg in node.args:
                _check_node(arg)
        for keyword in node.keywords:
            if (keyword.arg not in _ASSUMPTIONS or not isinstance(keyword.value, ast.Constant)
                    or type(keyword.value.value) is not bool):
                raise ValueError(f"the argument {keyword.arg}=")
        if name != "Symbol" and node.keywords:
            raise ValueError(f"keyword arguments to {name}")
    else:
        raise ValueError(f"a {type(node).__name__}")


def check_expression(text: object) -> None:
    """ProgramRejected unless text is a size expression as torch.export writes them."""
    if not isinstance(text, str) or len(text) > _MAX_LENGTH:
        raise ProgramRejected("the graph holds a size expression that is not a short text")
    try:
        tree = ast.parse(text, mode="eval")
        _check_node(tree.body)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ProgramRejected(f"the graph holds a size expression torch.export does not "
                              f"write ({str(exc)[:80]}): {text[:120]!r}") from None
