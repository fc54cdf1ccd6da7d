"""Certified robustness: sound lower bounds on the logit margins of a model.

For an input ``x`` in [0, 1] with label ``y`` and a budget ``eps``, the certifiers bound
``z_y(x') - z_j(x')`` from below for every class ``j`` and every ``x'`` in the l_inf ball
of radius ``eps`` around ``x`` intersected with the box [0, 1]. An input is *certified*
when every bound is positive: no perturbation in the region changes its prediction.

One module per concept, each building only on the ones above it:

* :mod:`.bounds` -- boxes, the input region, specifications, concretisation;
* :mod:`.relaxations` -- linear bounds of ReLU, tanh, sigmoid and max pooling;
* :mod:`.ops` -- the graph's operations (forward, intervals, transposes, relaxations);
* :mod:`.graph` -- tracing a model (``torch.fx``) into a :class:`BoundGraph`;
* :mod:`.registry` -- the certifier registry (``register_certifier``, ``get_certifier``);
* :mod:`.lipschitz` -- ``lipschitz``: global Lipschitz bounds from weight norms;
* :mod:`.ibp` -- ``ibp``: interval bound propagation (Gowal et al., 2018);
* :mod:`.backward` -- backward linear bound propagation (the core of CROWN);
* :mod:`.windows` -- backward passes on receptive-field windows (convolutions);
* :mod:`.crown` -- ``crown`` (Zhang et al., 2018) and ``crown-ibp`` (Zhang et al., 2020);
* :mod:`.alpha` -- ``alpha-crown``: CROWN with optimised ReLU lower slopes (Xu et al.,
  2021), for the final bound;
* :mod:`.api` -- :func:`certify`, :func:`certified_accuracy`, :func:`margin_bounds`,
  :func:`logit_bounds` and :class:`CertResult`;
* :mod:`.sweep` -- :func:`certify_sweep` (several eps x several methods) and
  :class:`CertificationSweep` (its table and files).

Example::

    >>> from robustrank.evaluation import certify
    >>> result = certify(model, x, y, eps=0.01, method="crown")
    >>> result.certified_accuracy
"""

from . import alpha as _alpha  # noqa: F401  (registers alpha-crown)
from . import crown as _crown  # noqa: F401  (registers crown, crown-ibp)
from . import ibp as _ibp  # noqa: F401  (registers ibp)
from . import lipschitz as _lipschitz  # noqa: F401  (registers lipschitz)
from .api import (
    CertResult,
    certified_accuracy,
    certify,
    check_certify_inputs,
    logit_bounds,
    margin_bounds,
)
from .bounds import Box, input_box, margin_spec
from .graph import SUPPORTED, BoundGraph, UnsupportedModelError, build_graph
from .registry import (
    DEFAULT_CERTIFIER,
    CertifierSpec,
    get_certifier,
    list_certifiers,
    register_certifier,
)
from .sweep import CertificationSweep, certify_sweep, sweep_paths

__all__ = [
    "CertResult",
    "certify",
    "certified_accuracy",
    "margin_bounds",
    "logit_bounds",
    "check_certify_inputs",
    "CertificationSweep",
    "certify_sweep",
    "sweep_paths",
    "Box",
    "input_box",
    "margin_spec",
    "BoundGraph",
    "build_graph",
    "UnsupportedModelError",
    "SUPPORTED",
    "CertifierSpec",
    "DEFAULT_CERTIFIER",
    "register_certifier",
    "list_certifiers",
    "get_certifier",
]
