"""Names and kinds of torch ops as the tracer records them, and safe argument rendering.

Provenance ids survive only ops that move data. This module says which ops do,
which change values (arithmetic), and which casts may round ids away.

>>> import torch
>>> op_name(torch.Tensor.__getitem__), op_name(torch.concat), op_name(torch.Tensor.view)
('getitem', 'cat', 'view')
>>> value_warning("add"), value_warning("view")
("arithmetic op 'add' changes values: ids no longer valid", None)
>>> cast_warning(torch.float64, torch.bfloat16)
'cast float64->bfloat16 may destroy ids'
>>> render_arg((slice(None), slice(0, 4)))
[[None, None, None], [0, 4, None]]
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
from collections.abc import Callable
from typing import Any

import torch

from syncviz.trace.records import JSONValue

# Ops that only move, select, repeat or re-view elements: every output element is a
# copy of some input element, so provenance ids stay exact.
MOVEMENT_OPS = frozenset(
    {
        "getitem", "setitem", "cat", "stack", "hstack", "vstack", "dstack",
        "column_stack", "chunk", "split", "split_with_sizes", "tensor_split", "hsplit",
        "vsplit", "dsplit", "unbind", "view", "view_as", "reshape", "reshape_as", "flatten",
        "unflatten", "ravel", "squeeze", "unsqueeze", "squeeze_", "unsqueeze_", "transpose",
        "transpose_", "swapaxes", "swapdims", "t", "t_", "T", "mT", "permute", "movedim",
        "moveaxis", "narrow", "narrow_copy", "select", "index_select", "gather", "take",
        "take_along_dim", "masked_select", "contiguous", "clone", "detach", "detach_", "data",
        "copy_", "expand", "expand_as", "broadcast_to", "repeat", "repeat_interleave", "tile",
        "flip", "fliplr", "flipud", "roll", "rot90", "diagonal", "as_strided", "unfold",
        "index_copy", "index_copy_", "scatter", "scatter_", "index_put", "index_put_",
        "masked_scatter", "masked_scatter_", "requires_grad_", "share_memory_", "pin_memory",
    }
)  # fmt: skip

# Dtype or device conversions: data moves, but a narrower dtype may round ids.
CAST_OPS = frozenset(
    {
        "to", "type", "type_as", "float", "double", "half", "bfloat16", "int", "long",
        "short", "char", "byte", "bool", "cpu", "cuda",
    }
)  # fmt: skip

# Ops that make a new tensor shaped like an input but with none of its values.
CREATION_OPS = frozenset(
    {
        "empty_like", "zeros_like", "ones_like", "full_like", "rand_like", "randn_like",
        "randint_like", "new_empty", "new_zeros", "new_ones", "new_full", "new_tensor",
    }
)  # fmt: skip

# Ops that compute new values; an in-place form (name + "_") counts the same.
ARITHMETIC_OPS = frozenset(
    {
        "add", "sub", "subtract", "rsub", "mul", "multiply", "div", "divide", "true_divide",
        "floor_divide", "remainder", "fmod", "pow", "float_power", "neg", "negative", "abs",
        "absolute", "sign", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt",
        "rsqrt", "reciprocal", "square", "sin", "cos", "tan", "tanh", "sigmoid", "relu",
        "gelu", "silu", "softmax", "log_softmax", "matmul", "mm", "bmm", "mv", "dot",
        "addmm", "baddbmm", "einsum", "linear", "sum", "mean", "prod", "cumsum", "cumprod",
        "std", "var", "norm", "max", "min", "amax", "amin", "argmax", "argmin", "clamp",
        "clip", "round", "floor", "ceil", "trunc", "frac", "lerp", "addcmul", "addcdiv",
        "maximum", "minimum", "where", "masked_fill", "fill", "zero", "normal", "uniform",
        "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "and", "or", "xor",
        "invert", "lshift", "rshift", "eq", "ne", "lt", "le", "gt", "ge", "radd", "rmul",
        "rtruediv", "rdiv", "rpow", "rmatmul", "rfloordiv", "rmod", "truediv", "floordiv",
        "mod", "iadd", "isub", "imul", "itruediv", "idiv", "ifloordiv", "imod", "ipow",
    }
)  # fmt: skip

# Trailing-underscore ops that change metadata only, not the values held.
_METADATA_IN_PLACE = frozenset({"requires_grad_", "share_memory_", "detach_"})

_ALIASES = {"concat": "cat", "concatenate": "cat"}

_NAME_CACHE: dict[Any, str] = {}


def op_name(func: Callable[..., Any]) -> str:
    """The recorded name of a torch callable: ``__getitem__`` -> ``getitem``,
    ``torch.concat`` -> ``cat``, a property getter such as ``Tensor.T`` -> ``T``.

    >>> op_name(torch.Tensor.T.__get__), op_name(torch.Tensor.__setitem__)
    ('T', 'setitem')
    """
    try:
        return _NAME_CACHE[func]
    except (KeyError, TypeError):
        pass
    name = getattr(func, "__name__", None) or type(func).__name__
    if name == "__get__":
        # A getset descriptor's getter: name the property itself.
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
    name = _ALIASES.get(name, name)
    with contextlib.suppress(TypeError):  # an unhashable callable is named each time
        _NAME_CACHE[func] = name
    return name


def is_in_place(name: str) -> bool:
    """Whether op ``name`` overwrites its first tensor argument.

    >>> is_in_place("copy_"), is_in_place("setitem"), is_in_place("view"), is_in_place("detach_")
    (True, True, False, False)
    """
    if name == "setitem":
        return True
    return name.endswith("_") and not name.startswith("_") and name not in _METADATA_IN_PLACE


@functools.cache
def value_warning(name: str) -> str | None:
    """A warning if op ``name`` does not only move data, else ``None``.

    >>> value_warning("mul_")
    "arithmetic op 'mul_' changes values: ids no longer valid"
    >>> value_warning("my_kernel")
    "op 'my_kernel' is not a known data-movement op: ids may no longer be valid"
    """
    if name in MOVEMENT_OPS or name in CAST_OPS or name in CREATION_OPS:
        return None
    if name.removesuffix("_") in ARITHMETIC_OPS:
        return f"arithmetic op '{name}' changes values: ids no longer valid"
    return f"op '{name}' is not a known data-movement op: ids may no longer be valid"


@functools.cache
def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``'bfloat16'``.

    >>> dtype_name(torch.float64)
    'float64'
    """
    return str(dtype).removeprefix("torch.")


def _mantissa_bits(dtype: torch.dtype) -> int:
    # eps is 2**-mantissa_bits: 23 for float32, 7 for bfloat16, 52 for float64.
    return round(-math.log2(torch.finfo(dtype).eps))


def _cast_loses_values(src: torch.dtype, dst: torch.dtype) -> bool:
    if src == dst or src == torch.bool:
        return False
    if dst == torch.bool or src.is_complex or dst.is_complex:
        return True
    if src.is_floating_point:
        if not dst.is_floating_point:
            # Integer-valued ids would survive, but any fraction or range would not;
            # flag it so nobody renders a rounded id as if it were exact.
            return True
        return (
            _mantissa_bits(dst) < _mantissa_bits(src) or torch.finfo(dst).max < torch.finfo(src).max
        )
    isrc = torch.iinfo(src)
    value_bits = isrc.bits - (1 if isrc.min < 0 else 0)
    if dst.is_floating_point:
        # A float holds every integer up to 2**(mantissa bits + 1) exactly.
        return _mantissa_bits(dst) + 1 < value_bits
    idst = torch.iinfo(dst)
    return idst.max < isrc.max or idst.min > isrc.min


@functools.cache
def cast_warning(src: torch.dtype, dst: torch.dtype) -> str | None:
    """A warning if casting ``src`` to ``dst`` can change some integer id, else ``None``.

    >>> cast_warning(torch.float32, torch.float64) is None, cast_warning(torch.int64, torch.float32)
    (True, 'cast int64->float32 may destroy ids')
    """
    try:
        loses = _cast_loses_values(src, dst)
    except (TypeError, RuntimeError):
        loses = True  # a dtype torch cannot describe: assume the worst
    return f"cast {dtype_name(src)}->{dtype_name(dst)} may destroy ids" if loses else None


_MAX_DEPTH = 6
_MAX_STR = 200


class TensorMark:
    """A tensor nested in an op argument (an index tensor), kept as its ref only, so
    a captured argument never keeps a tensor alive.

    >>> render_arg((TensorMark(3), 1))
    ['#3', 1]
    """

    __slots__ = ("ref",)

    def __init__(self, ref: int) -> None:
        self.ref = ref

    def __repr__(self) -> str:
        return f"TensorMark({self.ref})"


def freeze_arg(value: Any, ref_of: Callable[[torch.Tensor], int], _depth: int = 0) -> Any:
    """A copy of an argument that is safe to keep until rendering: lists become
    tuples and tensors :class:`TensorMark` s holding their refs.

    >>> freeze_arg([1, (torch.zeros(1), slice(2))], ref_of=lambda t: 7)
    (1, (TensorMark(7), slice(None, 2, None)))
    """
    if isinstance(value, torch.Tensor):
        return TensorMark(ref_of(value))
    if isinstance(value, (list, tuple)) and _depth < _MAX_DEPTH:
        return tuple(freeze_arg(v, ref_of, _depth + 1) for v in value)
    return value


def render_arg(
    value: Any, ref_of: Callable[[torch.Tensor], int] | None = None, _depth: int = 0
) -> JSONValue:
    """A JSON form of a non-tensor op argument; never the repr of an arbitrary object.

    Slices become ``[start, stop, step]``, tuples and ``torch.Size`` lists, dtypes
    their names, ``...`` the string ``"..."``, a tensor ``"#<ref>"`` (a
    :class:`TensorMark`, or a tensor via ``ref_of``); anything else only its type
    name, e.g. ``"<object>"``.

    >>> render_arg([Ellipsis, torch.Size([2, 3]), torch.bfloat16, object()])
    ['...', [2, 3], 'bfloat16', '<object>']
    """
    kind = type(value)
    # Exact-type checks first: ints and slices are nearly every argument seen.
    if kind is int or kind is bool or value is None:
        return value
    if kind is slice and _depth < _MAX_DEPTH:
        return [render_arg(v, ref_of, _depth + 1) for v in (value.start, value.stop, value.step)]
    if kind is TensorMark:
        return f"#{value.ref}"
    if isinstance(value, str):
        return value[:_MAX_STR]
    if isinstance(value, torch.Tensor):
        return f"#{ref_of(value)}" if ref_of is not None else "<Tensor>"
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else repr(number)
    if _depth >= _MAX_DEPTH:
        return "<...>"
    if value is Ellipsis:
        return "..."
    if isinstance(value, (list, tuple)):
        return [render_arg(v, ref_of, _depth + 1) for v in value]
    if isinstance(value, torch.dtype):
        return dtype_name(value)
    if isinstance(value, (torch.device, torch.memory_format, torch.layout)):
        return str(value)
    return f"<{type(value).__name__}>"
