"""Weight layers of any ``nn.Module``, named by module path, in forward order.

The layers ``W^1..W^m`` of Eq. (1) are the model's ``nn.Linear`` and convolution modules.
They are named by module path (``"block.conv1"``) and ordered as the forward pass first
calls them, found with forward hooks on one sample input, because registration order is
not forward order in general. The order is found once and cached on the model.

* A model that defines ``weight_layers()`` (the paper's FCNN and CNN) gives its order
  itself; one that defines ``layer_aliases()`` gets those aliases (``"W1"`` ...).
* Otherwise the probe input is ``example`` if given, else zeros of the input shape
  recorded on the model (:func:`~robustrank.models.registry.set_input_shape`; set by
  ``create_model`` for registered shapes, by training from the dataset, and by
  ``load_checkpoint``). Without either, layers come in registration order, and anything
  that needs the forward order (paper indices, the joint chain of Eq. 7) says how to fix it.
* Layers the forward pass never calls come last, in registration order.

Convolution kernels ``(out, in, kh, kw)`` are reshaped to ``(out, in*kh*kw)`` (Appendix B).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._modes import eval_mode
from .registry import input_shape_of

__all__ = [
    "WeightLayer",
    "LayerOrderUnknown",
    "LayerDict",
    "is_weight_layer",
    "named_weight_layers",
    "weight_layers",
    "weight_matrices",
    "as_matrix",
    "probe_forward_order",
    "match_layers",
    "select_layers",
]

_ORDER_ATTR = "_robustrank_layer_order"


class LayerOrderUnknown(ValueError):
    """The forward order of a model's layers is needed but cannot be probed."""


@dataclass(frozen=True)
class WeightLayer:
    """One weight layer: module path, module, 1-based forward index and paper alias."""

    name: str
    module: nn.Module
    index: int
    alias: str | None = None

    @property
    def key(self) -> str:
        """The alias if there is one (``"W1"``), else the module path; names history columns."""
        return self.alias or self.name

    @property
    def weight(self) -> Tensor:
        return self.module.weight


def is_weight_layer(module: nn.Module) -> bool:
    """``nn.Linear`` or a convolution with an initialised weight."""
    if not isinstance(module, nn.Linear | nn.modules.conv._ConvNd):
        return False
    w = getattr(module, "weight", None)
    return isinstance(w, Tensor) and not isinstance(w, nn.parameter.UninitializedParameter)


def as_matrix(w: Tensor) -> Tensor:
    """A weight as a 2-D matrix: conv kernels (out, in, kh, kw) -> (out, in*kh*kw), Appendix B."""
    if w.dim() == 2:
        return w
    if w.dim() in (3, 4, 5):
        return w.reshape(w.shape[0], -1)
    raise ValueError(
        f"expected a 2-D weight matrix or a conv kernel (out, in, kh, kw), "
        f"got shape {tuple(w.shape)}"
    )


def probe_forward_order(model: nn.Module, example: Tensor | tuple[int, ...]) -> list[str]:
    """Module paths of the weight layers in the order one forward pass first calls them.

    ``example`` is an input batch or a shape ``(C, H, W)`` (zeros are used). The pass runs
    in eval mode without gradients; the model's modes are restored. The result is cached
    on the model.
    """
    candidates = {id(m): n for n, m in model.named_modules() if is_weight_layer(m)}
    x = _probe_input(model, example)
    order: list[str] = []

    def hook(module: nn.Module, _inputs: Any, _output: Any) -> None:
        name = candidates[id(module)]
        if name not in order:
            order.append(name)

    handles = [m.register_forward_hook(hook) for m in model.modules() if id(m) in candidates]
    try:
        with eval_mode(model), torch.no_grad():
            model(x)
    except Exception as err:
        raise LayerOrderUnknown(
            f"probing the forward order of {type(model).__name__} with an input of shape "
            f"{tuple(x.shape)} failed ({type(err).__name__}: {err}); pass an example input "
            "of the right shape"
        ) from err
    finally:
        for h in handles:
            h.remove()
    order += [n for n in candidates.values() if n not in order]
    model.__dict__[_ORDER_ATTR] = tuple(order)
    return order


def _probe_input(model: nn.Module, example: Tensor | tuple[int, ...]) -> Tensor:
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    if isinstance(example, Tensor):
        return example[:1].detach().to(device)
    return torch.zeros(1, *example, device=device, dtype=dtype)


def _order(model: nn.Module, example: Tensor | tuple[int, ...] | None) -> list[str] | None:
    """Forward order of the weight layers' paths, or None when it cannot be known."""
    paths = {id(m): n for n, m in model.named_modules()}
    if hasattr(model, "weight_layers"):
        return [paths[id(m)] for m in model.weight_layers()]
    if example is not None:
        return probe_forward_order(model, example)
    cached = model.__dict__.get(_ORDER_ATTR)
    current = {n for n, m in model.named_modules() if is_weight_layer(m)}
    if cached is not None and set(cached) == current:
        return list(cached)
    shape = input_shape_of(model)
    return probe_forward_order(model, shape) if shape is not None else None


def named_weight_layers(
    model: nn.Module,
    example: Tensor | tuple[int, ...] | None = None,
    *,
    require_order: bool = False,
) -> list[WeightLayer]:
    """Every weight layer of ``model`` with its path, forward index and alias (see module doc).

    With ``require_order``, a model whose forward order cannot be probed raises
    :class:`LayerOrderUnknown` instead of falling back to registration order.
    """
    modules = dict(model.named_modules())
    order = _order(model, example)
    if order is None:
        if require_order:
            raise LayerOrderUnknown(
                f"the forward order of {type(model).__name__}'s layers is unknown (it is "
                "needed for paper indices such as 1 for W1, and for the joint regulariser); "
                "record the input shape with robustrank.models.set_input_shape(model, "
                "(C, H, W)), or key layers by module name"
            )
        order = [n for n, m in modules.items() if is_weight_layer(m)]
    aliases = getattr(model, "layer_aliases", None)
    by_path = {v: k for k, v in aliases().items()} if callable(aliases) else {}
    return [WeightLayer(n, modules[n], i, by_path.get(n)) for i, n in enumerate(order, 1)]


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The modules W^1..W^m of a model, in forward order (see :func:`named_weight_layers`)."""
    return [layer.module for layer in named_weight_layers(model)]


class LayerDict(Mapping[str, Tensor]):
    """A read-only ``{module path: tensor}`` mapping that also answers to aliases (``"W1"``)."""

    def __init__(self, items: list[tuple[WeightLayer, Tensor]]) -> None:
        self._data = {layer.name: t for layer, t in items}
        self._alias = {layer.alias: layer.name for layer, _ in items if layer.alias}

    def __getitem__(self, key: str) -> Tensor:
        if key in self._data:
            return self._data[key]
        if key in self._alias:
            return self._data[self._alias[key]]
        raise KeyError(f"no weight layer {key!r}; layers: {', '.join(self._data)}")

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k!r}: {tuple(v.shape)}" for k, v in self._data.items())
        return f"LayerDict({{{shapes}}})"


def weight_matrices(model: nn.Module, example: Tensor | tuple[int, ...] | None = None) -> LayerDict:
    """Every weight as a 2-D matrix, keyed by module path in forward order (Appendix B).

    Paper aliases work as keys too (``weight_matrices(fcnn)["W1"]``). The matrices are
    views of the parameters, so they carry gradients.
    """
    layers = named_weight_layers(model, example)
    return LayerDict([(layer, as_matrix(layer.weight)) for layer in layers])


def match_layers(
    layers: list[WeightLayer], key: int | str, owner: str = "the model"
) -> list[WeightLayer]:
    """The layers a regulariser key selects: a 1-based paper index, an alias, a module path
    or a glob over module paths (``"layer*.conv*"``). Raises ValueError if none match."""
    if isinstance(key, bool):
        raise TypeError(f"layer key must be an int index or a string, got {key!r}")
    if isinstance(key, int):
        if not 1 <= key <= len(layers):
            raise ValueError(f"layer index {key} does not exist; {_describe(layers, owner)}")
        return [layers[key - 1]]
    if not isinstance(key, str) or not key:
        raise TypeError(f"layer key must be an int index or a non-empty string, got {key!r}")
    exact = [layer for layer in layers if key in (layer.name, layer.alias)]
    if exact:
        return exact
    found = [layer for layer in layers if fnmatch.fnmatchcase(layer.name, key)]
    if not found:
        raise ValueError(f"no weight layer matches {key!r}; {_describe(layers, owner)}")
    return found


def select_layers(
    layers: list[WeightLayer], values: Mapping[Any, Any], what: str, owner: str = "the model"
) -> list[tuple[WeightLayer, Any]]:
    """``[(layer, value)]`` in forward order for a ``{layer key: value}`` map (keys as in
    :func:`match_layers`). Every key must select a layer and no layer may be selected
    twice; errors start with ``what`` (``"l1 regulariser"``, ``"structure.prune"``)."""
    chosen: dict[str, tuple[Any, Any]] = {}
    for key, value in values.items():
        try:
            found = match_layers(layers, key, owner=owner)
        except ValueError as err:
            raise ValueError(f"{what}: {err}") from None
        for layer in found:
            if layer.name in chosen:
                raise ValueError(
                    f"{what}: layer {layer.name!r} is selected by both {chosen[layer.name][0]!r} "
                    f"and {key!r}; give each layer one value"
                )
            chosen[layer.name] = (key, value)
    return [(layer, chosen[layer.name][1]) for layer in layers if layer.name in chosen]


def _describe(layers: list[WeightLayer], owner: str) -> str:
    names = [
        f"{layer.index}={layer.name}" + (f" ({layer.alias})" if layer.alias else "")
        for layer in layers
    ]
    return f"{owner} has layers 1..{len(layers)}: {', '.join(names) or 'none'}"
