"""From an ``nn.Module`` to a bound graph: a small DAG of :mod:`~.ops` in topological order.

:func:`build_graph` traces the model with ``torch.fx`` (:class:`BoundTracer` keeps the
supported layers as leaves, recognised by ``isinstance`` so that parametrized layers such
as ``ParametrizedLinear`` stay leaves), propagates shapes with a probe batch, and turns
each node that the output depends on into a :class:`GraphNode`. Nodes whose result is
unused (e.g. the paper models' input checks) are dropped; identities, dropout in eval
mode and ``contiguous`` become aliases; a batch norm directly after a linear or
convolution layer is folded into it. Anything else raises :class:`UnsupportedModelError`
naming the module path or function and listing what is supported.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..._modes import model_device
from .ops import (
    ActivationOp,
    AddOp,
    AvgPoolOp,
    BatchNormOp,
    BoundOp,
    Constant,
    ConstantAffineOp,
    ConvOp,
    ElementwiseAffineOp,
    LinearOp,
    MaxPoolOp,
    MeanOp,
    ReshapeOp,
)

__all__ = [
    "UnsupportedModelError",
    "SUPPORTED",
    "LEAF_TYPES",
    "BoundTracer",
    "GraphNode",
    "BoundGraph",
    "build_graph",
]

#: What the certifiers can bound (for error messages and the docs).
SUPPORTED = (
    "nn.Linear; nn.Conv2d (groups=1, dilation=1, zero padding, any stride/padding incl. "
    "'same'); nn.BatchNorm1d/2d in eval mode; ReLU, Tanh, Sigmoid (modules, F.*/torch.* "
    "functions, Tensor methods); nn.MaxPool2d / F.max_pool2d; nn.AvgPool2d / F.avg_pool2d; "
    "nn.AdaptiveAvgPool2d with an output size dividing the input; mean over non-batch "
    "dims; flatten / view / reshape keeping the batch dim; nn.Identity; dropout in eval "
    "mode; x + y and x - y of two tensors; +, -, *, / by constants (numbers, buffers)"
)

#: Layers kept as leaves of the trace (when their ``forward`` is torch's own).
LEAF_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
)


class UnsupportedModelError(ValueError):
    """The model contains something the certifiers cannot bound (the message names it and
    lists what is supported)."""


def _unsupported(what: str, why: str = "") -> UnsupportedModelError:
    more = f" ({why})" if why else ""
    return UnsupportedModelError(f"cannot bound {what}{more}; supported: {SUPPORTED}")


class BoundTracer(torch.fx.Tracer):
    """A ``torch.fx`` tracer that keeps every layer of :data:`LEAF_TYPES` as one call
    (``isinstance``, so parametrized subclasses qualify), unless it overrides ``forward``."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        for base in LEAF_TYPES:
            if isinstance(m, base) and type(m).forward is base.forward:
                return True
        return super().is_leaf_module(m, module_qualified_name)


@dataclass(frozen=True)
class GraphNode:
    """One node: ``op`` applied to the nodes ``inputs``; ``shape`` is one example's shape.
    The input node has ``op=None``."""

    name: str
    op: BoundOp | None
    inputs: tuple[int, ...]
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        """Elements per example."""
        return math.prod(self.shape)


class BoundGraph:
    """A traced model as bound ops in topological order; node 0 is the input.

    Holds the model's modules (weights are read at bound time, never copied).
    """

    def __init__(self, model: nn.Module, nodes: Sequence[GraphNode], output: int) -> None:
        self.model, self.nodes, self.output = model, list(nodes), output

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The per-example input shape."""
        return self.nodes[0].shape

    @property
    def num_classes(self) -> int:
        """The number of logits."""
        return self.nodes[self.output].shape[0]

    def forward(self, x: Tensor) -> Tensor:
        """The model's function, computed op by op (equals ``model(x)`` in eval mode)."""
        values: list[Tensor] = [x]
        for node in self.nodes[1:]:
            values.append(node.op.forward(*(values[i] for i in node.inputs)))
        return values[self.output]

    def consumers(self, index: int) -> list[int]:
        """The nodes that take node ``index`` as an input."""
        return [i for i, n in enumerate(self.nodes) if index in n.inputs]

    def needs_bounds(self) -> list[int]:
        """The nodes whose bounds a relaxation needs: inputs of nonlinear ops."""
        return sorted({n.inputs[0] for n in self.nodes[1:] if not n.op.affine})

    def exact_nodes(self) -> list[bool]:
        """Per node, whether interval propagation from the input box is exact for it
        (per neuron): a single affine map of a box (e.g. the first layer), elementwise
        maps of such nodes, or a box itself."""
        boxlike, exact = [True], [True]
        for node in self.nodes[1:]:
            op, src = node.op, node.inputs[0]
            elementwise = isinstance(op, ElementwiseAffineOp | ReshapeOp | ActivationOp)
            boxlike.append(elementwise and boxlike[src])
            if elementwise:
                exact.append(exact[src])
            else:
                exact.append(not isinstance(op, AddOp) and boxlike[src])
        return exact

    def __repr__(self) -> str:
        lines = [
            f"{i}: {n.name} = {n.op.describe() if n.op else 'input'}{n.inputs} -> {n.shape}"
            for i, n in enumerate(self.nodes)
        ]
        return "BoundGraph(\n  " + "\n  ".join(lines) + f"\n  output: {self.output}\n)"


#: The batch size of the probe that propagates shapes (unlikely to be any other dim).
PROBE_BATCH = 7


def _check_modes(model: nn.Module) -> None:
    for path, m in model.named_modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d) and (
            m.training or m.running_mean is None or m.running_var is None
        ):
            raise _unsupported(
                f"{type(m).__name__} at {path!r} in training mode or without running statistics",
                "certify in eval mode (model.eval()); only running statistics are affine",
            )
        if isinstance(m, nn.Dropout | nn.Dropout2d) and m.training and m.p > 0:
            raise _unsupported(f"{type(m).__name__} at {path!r} in training mode", "eval mode")


def build_graph(
    model: nn.Module, input_shape: Sequence[int], device: torch.device | None = None
) -> BoundGraph:
    """Trace ``model`` (in eval mode) into a :class:`BoundGraph` for inputs of per-example
    shape ``input_shape``.

    Raises:
        UnsupportedModelError: a layer or function the certifiers cannot bound, a model
            torch.fx cannot trace, or batch norm / dropout in training mode.
    """
    _check_modes(model)
    try:
        graph = BoundTracer().trace(model)
    except Exception as err:  # fx raises TraceError, TypeError, ... on untraceable code
        raise _unsupported(f"{type(model).__name__}: torch.fx cannot trace it: {err}") from err
    gm = torch.fx.GraphModule(model, graph)
    probe = torch.zeros(PROBE_BATCH, *input_shape, device=device or model_device(model))
    with torch.no_grad():
        model(probe)  # the model's own errors (e.g. a wrong input shape) as they are
        ShapeProp(gm).propagate(probe)
    return _Builder(model, gm).build()


def _shape(node: torch.fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return None if meta is None or not hasattr(meta, "shape") else tuple(meta.shape)


def _arg(node: torch.fx.Node, pos: int, name: str, default: Any = None) -> Any:
    return node.args[pos] if len(node.args) > pos else node.kwargs.get(name, default)


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _live(graph: torch.fx.Graph) -> set[torch.fx.Node]:
    out = next(n for n in graph.nodes if n.op == "output")
    live, todo = set(), [out]
    while todo:
        node = todo.pop()
        if node not in live:
            live.add(node)
            todo.extend(node.all_input_nodes)
    return live


_NOT_TENSOR = object()  # a shape or size value (only reshapes may use it)

_RELU = (F.relu, torch.relu, torch.relu_, F.relu_)
_FUNCTION_ACTIVATIONS = {
    **{f: "relu" for f in _RELU},
    torch.tanh: "tanh",
    F.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
}
_METHOD_ACTIVATIONS = {
    "relu": "relu",
    "relu_": "relu",
    "tanh": "tanh",
    "tanh_": "tanh",
    "sigmoid": "sigmoid",
    "sigmoid_": "sigmoid",
}
_MODULE_ACTIVATIONS = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
_ARITHMETIC = {
    operator.add: "add",
    operator.iadd: "add",
    torch.add: "add",
    operator.sub: "sub",
    operator.isub: "sub",
    torch.sub: "sub",
    operator.mul: "mul",
    operator.imul: "mul",
    torch.mul: "mul",
    operator.truediv: "div",
    operator.itruediv: "div",
    torch.div: "div",
}
_METHOD_ARITHMETIC = {"add": "add", "sub": "sub", "mul": "mul", "div": "div"}
_RESHAPES = (torch.flatten, torch.reshape)
_METHOD_RESHAPES = ("flatten", "view", "reshape")
_ALIAS_METHODS = ("contiguous", "clone")
_SIZE_METHODS = ("size", "dim")


class _Builder:
    """Converts the live nodes of a shape-propagated fx graph into :class:`GraphNode`."""

    def __init__(self, model: nn.Module, gm: torch.fx.GraphModule) -> None:
        self.model, self.gm = model, gm
        self.nodes: list[GraphNode] = []
        self.env: dict[torch.fx.Node, Any] = {}
        self.origin: dict[int, torch.fx.Node] = {}

    def build(self) -> BoundGraph:
        live = _live(self.gm.graph)
        for node in self.gm.graph.nodes:
            if node in live:
                self.env[node] = self._convert(node)
        out = next(n for n in self.gm.graph.nodes if n.op == "output")
        result = out.args[0]
        if not isinstance(result, torch.fx.Node) or not isinstance(self.env[result], int):
            raise _unsupported("a model whose output is not a single tensor of logits")
        index = self.env[result]
        if len(self.nodes[index].shape) != 1:
            raise _unsupported(
                f"an output of shape {self.nodes[index].shape} per example", "need (classes,)"
            )
        return BoundGraph(self.model, self.nodes, index)

    # -- helpers ------------------------------------------------------------------------

    def _add(
        self, node: torch.fx.Node, op: BoundOp, inputs: tuple[int, ...], name: str = ""
    ) -> int:
        self.nodes.append(GraphNode(name or node.name, op, inputs, self._example_shape(node)))
        self.origin[len(self.nodes) - 1] = node
        return len(self.nodes) - 1

    def _example_shape(self, node: torch.fx.Node) -> tuple[int, ...]:
        shape = _shape(node)
        if shape is None or len(shape) == 0 or shape[0] != PROBE_BATCH:
            raise _unsupported(self._what(node), "its result does not keep the batch dimension")
        return shape[1:]

    def _tensor(self, node: torch.fx.Node, arg: Any) -> int:
        value = self.env.get(arg) if isinstance(arg, torch.fx.Node) else None
        if not isinstance(value, int):
            raise _unsupported(self._what(node), f"its input {arg!r} is not a graph tensor")
        return value

    def _what(self, node: torch.fx.Node) -> str:
        if node.op == "call_module":
            return (
                f"module {node.target!r} ({type(self.model.get_submodule(node.target)).__name__})"
            )
        if node.op == "call_method":
            return f"method Tensor.{node.target} (node {node.name!r})"
        name = getattr(node.target, "__name__", repr(node.target))
        module = getattr(node.target, "__module__", None) or ""
        return f"function {module + '.' if module else ''}{name} (node {node.name!r})"

    # -- dispatch -----------------------------------------------------------------------

    def _convert(self, node: torch.fx.Node) -> Any:
        if node.op == "placeholder":
            if self.nodes:
                raise _unsupported(f"a second input {node.name!r}", "one input tensor only")
            self.nodes.append(GraphNode("input", None, (), self._example_shape(node)))
            return 0
        if node.op == "get_attr":
            return Constant(root=self.model, path=node.target)
        if node.op == "output":
            return None
        if _shape(node) is None:
            return self._non_tensor(node)
        if node.op == "call_module":
            return self._module(node, self.model.get_submodule(node.target))
        return self._function(node)

    def _non_tensor(self, node: torch.fx.Node) -> Any:
        sizes = node.op == "call_method" and node.target in _SIZE_METHODS
        if sizes or (node.op == "call_function" and node.target in (getattr, operator.getitem)):
            return _NOT_TENSOR
        raise _unsupported(self._what(node), "it does not return a tensor")

    def _function(self, node: torch.fx.Node) -> Any:
        target, method = node.target, node.op == "call_method"
        if (method and target in _METHOD_ACTIVATIONS) or (
            not method and target in _FUNCTION_ACTIVATIONS
        ):
            kind = (_METHOD_ACTIVATIONS if method else _FUNCTION_ACTIVATIONS)[target]
            return self._add(node, ActivationOp(kind), (self._tensor(node, node.args[0]),))
        if (method and target in _METHOD_ARITHMETIC) or (not method and target in _ARITHMETIC):
            return self._arithmetic(node, (_METHOD_ARITHMETIC if method else _ARITHMETIC)[target])
        if (method and target in _METHOD_RESHAPES) or (not method and target in _RESHAPES):
            return self._reshape(node)
        if (method and target in _ALIAS_METHODS) or (not method and target is F.dropout):
            return self._alias(node)
        if (method and target == "neg") or (not method and target in (operator.neg, torch.neg)):
            op = ConstantAffineOp("mul", Constant(-1.0))
            return self._add(node, op, (self._tensor(node, node.args[0]),))
        if (method and target == "mean") or (not method and target is torch.mean):
            return self._mean(node, _arg(node, 1, "dim"), _arg(node, 2, "keepdim", False))
        if not method and target is F.max_pool2d:
            return self._maxpool(node, *_function_pool_args(node, max_pool=True))
        if not method and target is F.avg_pool2d:
            return self._avgpool(node, *_function_pool_args(node, max_pool=False))
        if not method and target is F.adaptive_avg_pool2d:
            return self._adaptive(node, _arg(node, 1, "output_size"))
        raise _unsupported(self._what(node))

    def _module(self, node: torch.fx.Node, module: nn.Module) -> Any:
        for cls, kind in _MODULE_ACTIVATIONS.items():
            if isinstance(module, cls):
                return self._add(node, ActivationOp(kind), (self._tensor(node, node.args[0]),))
        if isinstance(module, nn.Linear):
            return self._linear(node, module)
        if isinstance(module, nn.Conv2d):
            return self._conv(node, module)
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            return self._batchnorm(node, module)
        if isinstance(module, nn.Flatten):
            return self._reshape(node)
        if isinstance(module, nn.Identity | nn.Dropout | nn.Dropout2d):
            return self._alias(node)
        if isinstance(module, nn.MaxPool2d):
            if module.return_indices:
                raise _unsupported(self._what(node), "return_indices=True")
            args = (module.kernel_size, module.stride, module.padding, module.dilation)
            return self._maxpool(node, *args, module.ceil_mode)
        if isinstance(module, nn.AvgPool2d):
            m = module
            args = (m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad)
            return self._avgpool(node, *args, m.divisor_override)
        if isinstance(module, nn.AdaptiveAvgPool2d):
            return self._adaptive(node, module.output_size)
        raise _unsupported(self._what(node))

    # -- converters ---------------------------------------------------------------------

    def _alias(self, node: torch.fx.Node) -> int:
        if node.op == "call_function" and _arg(node, 2, "training", True) is not False:
            if _arg(node, 1, "p", 0.5) > 0:
                raise _unsupported(self._what(node), "dropout in training mode")
        return self._tensor(node, node.args[0])

    def _linear(self, node: torch.fx.Node, module: nn.Linear) -> int:
        src = self._tensor(node, node.args[0])
        if len(self.nodes[src].shape) != 1:
            raise _unsupported(self._what(node), "its input must be flat, (N, features)")
        return self._add(node, LinearOp(module), (src,), node.target)

    def _conv(self, node: torch.fx.Node, module: nn.Conv2d) -> int:
        src = self._tensor(node, node.args[0])
        if module.groups != 1 or _pair(module.dilation) != (1, 1):
            raise _unsupported(
                self._what(node),
                f"groups={module.groups}, dilation={module.dilation}; need groups=1, dilation=1",
            )
        if module.padding_mode != "zeros":
            raise _unsupported(self._what(node), f"padding_mode={module.padding_mode!r}")
        in_shape = self.nodes[src].shape
        if len(in_shape) != 3:
            raise _unsupported(self._what(node), "its input must be (N, C, H, W)")
        op = ConvOp(module, _conv_pads(module), in_shape)
        return self._add(node, op, (src,), node.target)

    def _batchnorm(self, node: torch.fx.Node, module: nn.Module) -> int:
        src = self._tensor(node, node.args[0])
        prev, arg = self.nodes[src], node.args[0]
        foldable = isinstance(prev.op, LinearOp | ConvOp) and prev.op.bn is None
        if foldable and self.origin.get(src) is arg and len(arg.users) == 1:
            op = replace(prev.op, bn=module)
            self.nodes[src] = replace(prev, name=f"{prev.name}+{node.target}", op=op)
            return src
        op = BatchNormOp(module, len(prev.shape))
        return self._add(node, op, (src,), node.target)

    def _reshape(self, node: torch.fx.Node) -> int:
        src = self._tensor(node, node.args[0])
        in_shape, out_shape = self.nodes[src].shape, self._example_shape(node)
        if in_shape == out_shape:
            return src
        return self._add(node, ReshapeOp(in_shape, out_shape), (src,))

    def _mean(self, node: torch.fx.Node, dims: Any, keepdim: bool) -> int:
        src = self._tensor(node, node.args[0])
        ndim = len(self.nodes[src].shape) + 1
        if dims is None:
            raise _unsupported(self._what(node), "a mean over every dim mixes the batch")
        dims = tuple(d % ndim for d in ((dims,) if isinstance(dims, int) else dims))
        if 0 in dims:
            raise _unsupported(self._what(node), "a mean over the batch dimension")
        return self._add(node, MeanOp(dims, bool(keepdim), self.nodes[src].shape), (src,))

    def _maxpool(
        self,
        node: torch.fx.Node,
        kernel: Any,
        stride: Any,
        padding: Any,
        dilation: Any,
        ceil_mode: bool,
    ) -> int:
        src = self._tensor(node, node.args[0])
        if len(self.nodes[src].shape) != 3:
            raise _unsupported(self._what(node), "its input must be (N, C, H, W)")
        out = self._example_shape(node)[1:]
        kernel = _pair(kernel)
        stride = kernel if stride is None or stride == [] else _pair(stride)
        op = MaxPoolOp(kernel, stride, _pair(padding), _pair(dilation), bool(ceil_mode), out)
        return self._add(node, op, (src,))

    def _avgpool(
        self,
        node: torch.fx.Node,
        kernel: Any,
        stride: Any,
        padding: Any,
        ceil_mode: bool,
        include_pad: bool,
        divisor: int | None,
    ) -> int:
        src = self._tensor(node, node.args[0])
        in_shape = self.nodes[src].shape
        if len(in_shape) != 3:
            raise _unsupported(self._what(node), "its input must be (N, C, H, W)")
        kernel = _pair(kernel)
        stride = kernel if stride is None or stride == [] else _pair(stride)
        op = AvgPoolOp(
            kernel, stride, _pair(padding), bool(ceil_mode), bool(include_pad), divisor, in_shape
        )
        return self._add(node, op, (src,))

    def _adaptive(self, node: torch.fx.Node, size: Any) -> int:
        src = self._tensor(node, node.args[0])
        in_shape = self.nodes[src].shape
        out = self._example_shape(node)[1:]
        if len(in_shape) != 3 or any(i % o for i, o in zip(in_shape[1:], out)):
            raise _unsupported(self._what(node), "the output size must divide the input size")
        kernel = tuple(i // o for i, o in zip(in_shape[1:], out))
        return self._add(
            node, AvgPoolOp(kernel, kernel, (0, 0), False, True, None, in_shape), (src,)
        )

    def _arithmetic(self, node: torch.fx.Node, kind: str) -> int:
        a, b = node.args[0], _arg(node, 1, "other")
        if set(node.kwargs) - {"other"}:
            raise _unsupported(self._what(node), f"options {sorted(node.kwargs)}")
        ia, ib = (self.env.get(v) if isinstance(v, torch.fx.Node) else None for v in (a, b))
        if isinstance(ia, int) and isinstance(ib, int):
            if kind not in ("add", "sub"):
                raise _unsupported(self._what(node), "a product or quotient of two graph tensors")
            return self._add(node, AddOp((1, 1 if kind == "add" else -1)), (ia, ib))
        if isinstance(ib, int) and kind == "div":
            raise _unsupported(self._what(node), "division by a graph tensor")
        src, const = (ia, b) if isinstance(ia, int) else (ib, a)
        if not isinstance(src, int):
            raise _unsupported(self._what(node), "arithmetic on constants only")
        if kind == "sub" and src == ib:
            kind = "rsub"
        return self._add(node, ConstantAffineOp(kind, self._constant(node, const, src)), (src,))

    def _constant(self, node: torch.fx.Node, value: Any, src: int) -> Constant:
        if isinstance(value, bool) or not isinstance(value, int | float | torch.fx.Node):
            raise _unsupported(self._what(node), f"operand {value!r} is not a number or buffer")
        if not isinstance(value, torch.fx.Node):
            return Constant(float(value))
        const = self.env.get(value)
        shape = _shape(value)
        if not isinstance(const, Constant) or shape is None:
            raise _unsupported(
                self._what(node),
                f"operand {value.name!r} is neither a graph tensor nor a model attribute",
            )
        full = (PROBE_BATCH, *self.nodes[src].shape)
        out = _shape(node)
        if out != full or len(shape) > len(full) or (len(shape) == len(full) and shape[0] != 1):
            raise _unsupported(
                self._what(node), f"constant of shape {shape} does not broadcast over the batch"
            )
        return Constant(root=const.root, path=const.path, batch_dim=len(shape) == len(full))


def _conv_pads(module: nn.Conv2d) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` zero padding of a convolution (``'same'`` puts the
    odd pixel at the right / bottom, as torch does)."""
    if module.padding == "valid":
        return (0, 0, 0, 0)
    if module.padding == "same":
        kh, kw = module.kernel_size
        return ((kw - 1) // 2, kw - 1 - (kw - 1) // 2, (kh - 1) // 2, kh - 1 - (kh - 1) // 2)
    ph, pw = _pair(module.padding)
    return (pw, pw, ph, ph)


def _function_pool_args(node: torch.fx.Node, max_pool: bool) -> Iterator[Any]:
    """The pooling options of an ``F.max_pool2d`` / ``F.avg_pool2d`` call, in the order of
    ``_Builder._maxpool`` / ``_Builder._avgpool``."""
    yield _arg(node, 1, "kernel_size")
    yield _arg(node, 2, "stride")
    yield _arg(node, 3, "padding", 0)
    if max_pool:
        if _arg(node, 6, "return_indices", False):
            raise _unsupported("F.max_pool2d with return_indices=True")
        yield _arg(node, 4, "dilation", 1)
        yield _arg(node, 5, "ceil_mode", False)
    else:
        yield _arg(node, 4, "ceil_mode", False)
        yield _arg(node, 5, "count_include_pad", True)
        yield _arg(node, 6, "divisor_override")
