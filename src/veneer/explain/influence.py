"""Influence functions: which training samples a prediction depends on (sample-importance explanations).

Koh & Liang (2017), "Understanding Black-box Predictions via Influence Functions" (ICML), Eq. 2: the effect of
upweighting a training point ``z_i`` on the loss at a test point ``z_t``,

    I_up,loss(z_i, z_t) = -grad_theta L(z_t)^T H^-1 grad_theta L(z_i),

with ``H`` the Hessian of the *mean* training loss at the trained parameters. Negative scores are "helpful"
training points (upweighting them lowers the test loss), positive ones "harmful". ``theta`` may be restricted
to some modules (Koh & Liang and Ghorbani et al. 2019 use the top layer of a network whose other layers are
frozen), which keeps ``H`` small enough to factorise.

Three ways to apply ``H^-1``:

* ``"exact"``: ``H`` is formed (in closed form for a final linear layer, below; otherwise from batched
  Hessian-vector products of the basis vectors) and factorised
  (Cholesky, or the eigendecomposition's pseudo-inverse when ``damping == 0``: the softmax cross-entropy
  Hessian of a last layer is singular along the directions that shift every logit equally, and every gradient
  is orthogonal to them).
* ``"cg"``: conjugate gradients on ``(H + damping I) s = v`` with full-data Hessian-vector products, one
  independent CG per test point, batched (Koh & Liang, Sec. 3).
* ``"lissa"``: the stochastic Neumann series of Agarwal, Bullins & Hazan (2017), "Second-order stochastic
  optimization for machine learning in linear time" (LiSSA), as used by Koh & Liang, Sec. 3:
  ``h_j = v + h_{j-1} - (H_batch + damping I) h_{j-1} / scale``, ``H^-1 v ~ h_depth / scale``.

When the selected parameters are the weight (and bias) of one ``nn.Linear`` whose output is the model's output
(the top layer of Koh & Liang and Ghorbani et al.), gradients and Hessian have a closed form: for logits
``z = W h + b`` and ``p = softmax(z)``, ``grad_W L = (p - e_y) h^T`` and ``H = mean_n (diag(p_n) - p_n p_n^T)
kron h~_n h~_n^T`` with ``h~ = (h, 1)`` (the softmax cross-entropy Hessian of a linear map, exact: the logits are
linear in ``W``), formed in float64 without Hessian-vector products (:class:`LinearHead`). Otherwise
per-sample training gradients come from ``torch.func`` (``vmap`` of ``grad`` of a ``functional_call``), a chunk
of ``batch_size`` samples at a time; they and (``exact``) the factorised Hessian are cached per model
state (recomputed when a parameter or buffer is changed in place or replaced). In an ``nn.Sequential`` the leading layers without a
selected parameter are run once on the training set (:func:`frozen_prefix`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from veneer.checks import check_eval_mode, check_positive, check_tensor
from veneer.data import as_labeled
from veneer.explain.base import Explainer
from veneer.models.capture import capture

METHODS = ("exact", "cg", "lissa")


class TopInfluence(NamedTuple):
    """``(B, k)`` training indices: ``helpful`` (most negative ``I_up,loss``, first the most helpful) and
    ``harmful`` (most positive, first the most harmful)."""

    helpful: torch.Tensor
    harmful: torch.Tensor

    @classmethod
    def of(cls, scores: torch.Tensor, k: int) -> "TopInfluence":
        """The top ``k`` of ``(B, N_train)`` scores already computed."""
        return cls(scores.topk(k, dim=1, largest=False).indices, scores.topk(k, dim=1).indices)


def select_parameters(model: nn.Module, params: list[str] | tuple[str, ...] | None) -> dict[str, torch.Tensor]:
    """The model's parameters named by module prefixes (``"9"`` selects ``"9.weight"`` and ``"9.bias"``;
    ``""`` or ``None`` selects all), in the model's order. Unknown prefixes raise, listing the known modules."""
    named = dict(model.named_parameters())
    if params is None:
        chosen = named
    else:
        if isinstance(params, str) or not isinstance(params, (list, tuple)) or not params:
            raise TypeError(f"params must be None or a non-empty list of module-name prefixes, got {params!r}")
        chosen = {}
        for prefix in params:
            if not isinstance(prefix, str):
                raise TypeError(f"params must hold module-name strings, got {prefix!r}")
            hits = {n: p for n, p in named.items() if not prefix or n == prefix or n.startswith(prefix + ".")}
            if not hits:
                known = ", ".join(dict.fromkeys(n.rsplit(".", 1)[0] for n in named))
                raise ValueError(f"params: {prefix!r} names no parameter of the model; modules with parameters: "
                                 f"{known}")
            chosen.update(hits)
        chosen = {n: p for n, p in named.items() if n in chosen}
    if not chosen:
        raise ValueError("params selects no parameter (the model has none)")
    return {n: p.detach() for n, p in chosen.items()}


def frozen_prefix(model: nn.Module, theta: dict[str, torch.Tensor]) -> tuple[nn.Module, nn.Module]:
    """``(frozen, head)`` with ``model(x) == head(frozen(x))`` and every selected parameter inside ``head``.

    For an ``nn.Sequential`` the leading children without a selected parameter form ``frozen`` (their output
    on the training set is computed once and cached; Hessian-vector products then only run ``head``);
    ``head`` keeps the original child names, so parameter names stay valid. Other models: ``frozen`` is the
    identity and ``head`` the whole model.
    """
    if isinstance(model, nn.Sequential):
        names = list(model._modules)
        first = min(names.index(n.split(".", 1)[0]) for n in theta)
        if first > 0:
            return model[:first], model[first:]
    return nn.Identity(), model


def last_layer(model: nn.Module) -> str:
    """Name of the last module that owns parameters (the default ``params`` prefix of the CLI)."""
    owners = [name for name, module in model.named_modules() if name and any(True for _ in module.parameters(False))]
    if not owners:
        raise ValueError("model has no parameters")
    return owners[-1]


class LinearHead:
    """Closed-form gradients and Hessian of the cross-entropy over the parameters of a final ``nn.Linear``.

    With ``z = W h + b``, ``p = softmax(z)`` and ``h~ = (h, 1)`` (``h`` alone without a selected bias):
    ``grad_(W, b) L(z, y) = (p - e_y) kron h~`` and the Hessian of the mean loss over ``N`` samples is
    ``H = (1/N) sum_n (diag(p_n) - p_n p_n^T) kron h~_n h~_n^T`` -- exact, since the logits are linear in the
    parameters (so the Gauss-Newton matrix is the Hessian). Parameters are flattened in the model's order:
    the weight row by row, then the bias.
    """

    def __init__(self, name: str, module: nn.Linear, bias: bool):
        self.name, self.module, self.bias = name, module, bias

    @classmethod
    def find(cls, model: nn.Module, theta: dict[str, torch.Tensor], x: torch.Tensor) -> "LinearHead | None":
        """The head when ``theta`` is the weight (and bias) of one ``nn.Linear`` taking ``(B, D)`` inputs whose
        output is the model's output on ``x`` (checked by running it); otherwise ``None``."""
        owner = {name.rsplit(".", 1)[0] if "." in name else "" for name in theta}
        if len(owner) != 1:
            return None
        name = owner.pop()
        if not name:  # the model itself is the layer: no hook point (the general path handles it)
            return None
        module = model.get_submodule(name)
        if not isinstance(module, nn.Linear):
            return None
        selected = {name.rsplit(".", 1)[-1] for name in theta}
        if "weight" not in selected:
            return None
        head = cls(name, module, "bias" in selected)
        with torch.no_grad():
            h, logits = head.features(model, x)
            if h.dim() != 2 or logits.dim() != 2 or not torch.equal(module(h), logits):
                return None
        return head

    def features(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h, logits)``: the head's input and the model's output on ``x`` (differentiable in ``x``)."""
        with capture(model, [self.name], inputs=True) as seen:
            logits = model(x)
        return seen.take()[self.name], logits

    def augmented(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([h, torch.ones_like(h[:, :1])], 1) if self.bias else h

    def gradients(self, h: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(B, P)`` per-sample gradients ``(p - e_y) kron h~``: the weight's rows, then the bias."""
        residual = logits.softmax(1) - F.one_hot(y, logits.shape[1]).to(logits.dtype)
        weight = (residual[:, :, None] * h[:, None, :]).flatten(1)
        return torch.cat([weight, residual], 1) if self.bias else weight

    def _order(self, classes: int, width: int) -> torch.Tensor:
        """Positions of the flattened parameters (weight rows, then bias) in the ``(class, h~ index)`` layout."""
        inner = width - 1 if self.bias else width
        weight = (torch.arange(classes)[:, None] * width + torch.arange(inner)[None, :]).flatten()
        return torch.cat([weight, torch.arange(classes) * width + inner]) if self.bias else weight

    def hessian(self, h: torch.Tensor, probabilities: torch.Tensor, chunk: int) -> torch.Tensor:
        """``(P, P)`` Hessian of the mean cross-entropy in float64, accumulated over chunks of samples."""
        classes, width = probabilities.shape[1], h.shape[1] + self.bias
        blocks = h.new_zeros(classes, width, width, dtype=torch.float64)
        outer = h.new_zeros(classes * width, classes * width, dtype=torch.float64)
        for hb, pb in zip(h.split(chunk), probabilities.split(chunk)):
            hb, pb = self.augmented(hb).double(), pb.double()
            blocks += torch.einsum("nc,ni,nj->cij", pb, hb, hb)
            joint = (pb[:, :, None] * hb[:, None, :]).flatten(1)
            outer += joint.T @ joint
        full = torch.block_diag(*blocks) - outer
        order = self._order(classes, width).to(h.device)
        return full[order][:, order] / len(h)

    def hessian_vector_products(self, h: torch.Tensor, probabilities: torch.Tensor, vectors: torch.Tensor,
                                chunk: int) -> torch.Tensor:
        """``H V`` for the rows of ``V`` without forming ``H``: the logit change of each sample, times
        ``diag(p) - p p^T``, mapped back to the parameters."""
        classes, width = probabilities.shape[1], h.shape[1] + self.bias
        order = self._order(classes, width).to(h.device)
        grid = vectors.new_zeros(len(vectors), classes * width)
        grid[:, order] = vectors
        grid = grid.view(len(vectors), classes, width)
        total = torch.zeros_like(grid)
        for hb, pb in zip(h.split(chunk), probabilities.split(chunk)):
            hb = self.augmented(hb)
            change = torch.einsum("kci,ni->nkc", grid, hb)
            curved = pb[:, None, :] * change - pb[:, None, :] * (pb[:, None, :] * change).sum(2, keepdim=True)
            total += torch.einsum("nkc,ni->kci", curved, hb)
        return total.flatten(1)[:, order] / len(h)


class _InverseHVP(torch.autograd.Function):
    """``(H + damping I)^-1 v`` by an iterative solver, differentiable in ``v``: ``H`` is symmetric and does
    not depend on ``v``, so the backward pass applies the same solver to the incoming gradient."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, solver: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        ctx.solver = solver
        return solver(v.detach())

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return _InverseHVP.apply(grad_output, ctx.solver), None


class Influence(Explainer):
    """Koh & Liang (2017) influence of every training sample on each test prediction, Eq. 2.

    ``influence = Influence(model, train_data, params=None, method="exact", damping=0.0)``;
    ``scores = influence(x_test, y_test)`` is ``(B, N_train)`` with ``scores[b, i] = I_up,loss(z_i, z_b) =
    -grad L(z_b)^T (H + damping I)^-1 grad L(z_i)``, ``L`` the cross-entropy of the model's logits and ``H``
    the Hessian of the mean training cross-entropy over the parameters selected by ``params`` (module-name
    prefixes, e.g. ``["9"]`` for the last layer of ``mnist_cnn``; ``None``: all parameters). ``y_test``
    defaults to the predicted class. With ``create_graph=True`` the scores are differentiable with respect to
    ``x_test`` (Ghorbani et al. 2019's attack on influence, :class:`veneer.attacks.InfluenceAttack`).

    ``train_data``: anything :func:`veneer.data.as_labeled` takes (``LabeledData``, ``(x, y)``, a Dataset or a
    DataLoader); it is cast to the model's dtype and device. ``batch_size`` samples (and ``batch_size``
    Hessian basis vectors) are processed per chunk.

    Captum's ``NaiveInfluenceFunction`` returns ``grad L(z_t)^T (H_sum + hessian_reg I)^-1 grad L(z_i)`` with
    ``H_sum = N H`` the Hessian of the summed loss: with ``hessian_reg = N * damping``, ``captum = -I_up,loss / N``
    (checked in tests/explain/test_influence.py).

    Method options (defaults converge on the bundled models' last layers; see docs/influence.md):

    * ``"exact"``: ``H + damping I`` (``P x P`` for ``P`` selected parameters: keep ``P`` in the thousands) is
      formed and factorised: Cholesky when ``damping > 0`` and it is positive definite, else its
      eigendecomposition with eigenvalues below ``P * machine-eps * max |eigenvalue|`` dropped (pseudo-inverse).
    * ``"cg"``: ``tol`` (relative residual, default 1e-6) and ``max_iter`` (default ``P``). ``H + damping I``
      must be positive semi-definite on the gradients' span (true for a last layer; elsewhere add damping).
    * ``"lissa"``: ``depth`` (default 5000) recursion steps on Hessians of ``lissa_batch_size`` random training
      samples (default 512; all samples when there are fewer), ``repeats`` (default 1) averaged runs, ``scale``
      (default: 1.5x the largest eigenvalue of ``H + damping I`` from 30 power iterations; the series converges
      for ``scale`` above the mini-batch Hessians' largest eigenvalue, and an eigenvalue ``l`` of ``H + damping
      I`` converges as ``(1 - l / scale)^depth``: the defaults suit ``damping >= 0.01`` on the bundled models'
      last layers, whose undamped Hessians have eigenvalues down to rounding; ``mnist-cnn``'s last layer,
      1000 training images, damping 0.01: correlation 0.964 with ``exact``), ``seed``.

    ``name = "influence"``; the attribution is over training samples, not input features.
    """

    name = "influence"
    differentiable = True

    def __init__(self, model: nn.Module, train_data: Any, params: list[str] | None = None, method: str = "exact",
                 damping: float = 0.0, batch_size: int = 256, tol: float = 1e-6, max_iter: int | None = None,
                 depth: int = 5000, lissa_batch_size: int = 512, repeats: int = 1, scale: float | None = None,
                 seed: int = 0):
        super().__init__(model)
        check_eval_mode(model)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not damping >= 0:
            raise ValueError(f"damping must be a number >= 0, got {damping!r}")
        for name, value in (("batch_size", batch_size), ("depth", depth), ("lissa_batch_size", lissa_batch_size),
                            ("repeats", repeats)):
            check_positive(name, value, integer=True)
        check_positive("tol", tol)
        if max_iter is not None:
            check_positive("max_iter", max_iter, integer=True)
        if scale is not None:
            check_positive("scale", scale)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.params = None if params is None else list(params)
        select_parameters(model, self.params)  # validate the prefixes now
        self.train_data = as_labeled(train_data, "train_data")
        self.method, self.damping, self.batch_size = method, float(damping), batch_size
        self.tol, self.max_iter = float(tol), max_iter
        self.depth, self.lissa_batch_size, self.repeats, self.scale, self.seed = (
            depth, lissa_batch_size, repeats, scale, seed)
        self._cache_key: tuple | None = None

    # ---------------------------------------------------------------- public

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                            if k not in ("model", "train_data") and not k.startswith("_"))
        return f"Influence(train_data=<{len(self.train_data)} samples>, {options})"

    def top(self, x: torch.Tensor, y=None, k: int = 5) -> TopInfluence:
        """The ``k`` most helpful and most harmful training indices for each test sample, ``(B, k)`` each."""
        check_positive("k", k, integer=True)
        n = len(self.train_data)
        if k > n:
            raise ValueError(f"k must be at most the number of training samples ({n}), got {k}")
        return TopInfluence.of(self(x, y), k)

    def __call__(self, x: torch.Tensor, target=None, create_graph: bool = False) -> torch.Tensor:
        check_eval_mode(self.model)
        check_tensor("x", x)
        self._prepare()
        if x.dtype != self._input_dtype or x.shape[1:] != self._input_shape:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self._input_shape))}) and dtype "
                             f"{self._input_dtype} like train_data, got {tuple(x.shape)} {x.dtype}")
        return super().__call__(x, target, create_graph)

    def attribute(self, x, target, create_graph):
        if self._linear is None:
            test_grad = self._gradients(self._frozen(x), target)
        else:
            test_grad = self._linear.gradients(*self._linear.features(self.model, x), target)
        if self.method == "exact":
            return -self._inverse(test_grad) @ self._train_grad.T
        solver = self._cg if self.method == "cg" else self._lissa
        return -_InverseHVP.apply(test_grad, solver) @ self._train_grad.T

    # ---------------------------------------------------------------- cached per model state

    def _state(self) -> tuple:
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        return (id(self.model),) + tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)

    def _prepare(self) -> None:
        key = self._state()
        if key == self._cache_key:
            return
        self._theta = select_parameters(self.model, self.params)
        self._frozen, self._head = frozen_prefix(self.model, self._theta)
        first = next(iter(self._theta.values()))
        x = self.train_data.x.to(device=first.device, dtype=first.dtype)
        self._y = self.train_data.y.to(first.device)
        self._input_shape, self._input_dtype = x.shape[1:], x.dtype
        with torch.no_grad():
            classes = self.model(x[:1]).shape[-1]
        if int(self._y.max()) >= classes:
            raise ValueError(f"train_data: y holds class {int(self._y.max())} but the model has {classes} outputs")
        self._linear = LinearHead.find(self.model, self._theta, x[:2])
        with torch.no_grad():
            if self._linear is None:
                self._features = torch.cat([self._frozen(part) for part in x.split(self.batch_size)])
                self._train_grad = self._gradients(self._features, self._y).detach()
            else:
                parts = [self._linear.features(self.model, part) for part in x.split(self.batch_size)]
                self._features = torch.cat([h for h, _ in parts])
                logits = torch.cat([z for _, z in parts])
                self._probabilities = logits.softmax(1)
                self._train_grad = self._linear.gradients(self._features, logits, self._y)
        self._inverse = self._factorised_inverse() if self.method == "exact" else None
        self._scale = self._lissa_scale() if self.method == "lissa" else None
        self._cache_key = key

    # ---------------------------------------------------------------- gradients and Hessian-vector products

    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for name, p in self._theta.items():
            out[name] = flat[start:start + p.numel()].view_as(p)
            start += p.numel()
        return out

    def _flat_theta(self) -> torch.Tensor:
        return torch.cat([p.reshape(-1) for p in self._theta.values()])

    def _sample_loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(self._head, self._unflatten(flat), (x.unsqueeze(0),))
        return F.cross_entropy(logits, y.unsqueeze(0))

    def _batch_loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(self._head, self._unflatten(flat), (x,)), y, reduction="sum")

    def _gradients(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(B, P)`` per-sample gradients of the loss over the selected parameters; differentiable in ``x``."""
        per_sample = vmap(grad(self._sample_loss), in_dims=(None, 0, 0))
        theta = self._flat_theta()
        parts = [per_sample(theta, xb, yb) for xb, yb in zip(x.split(self.batch_size), y.split(self.batch_size))]
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def _hessian(self, index: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        """The operator ``V (K, P) -> (H + damping I) V`` row by row, ``H`` the mean-loss Hessian over the
        training samples ``index`` (default: all). The loss gradient's graph is built once per chunk of samples
        and differentiated again for every batch of vectors (double backward, ``is_grads_batched``)."""
        x, y = (self._features, self._y) if index is None else (self._features[index], self._y[index])
        if self._linear is not None:
            probabilities = self._probabilities if index is None else self._probabilities[index]
            return lambda vectors: (self._linear.hessian_vector_products(x, probabilities, vectors, self.batch_size)
                                    + self.damping * vectors)
        theta = self._flat_theta().clone().requires_grad_(True)
        with torch.enable_grad():
            grads = [torch.autograd.grad(self._batch_loss(theta, xb, yb), theta, create_graph=True)[0]
                     for xb, yb in zip(x.split(self.batch_size), y.split(self.batch_size))]

        def apply(vectors: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                total = sum(torch.autograd.grad(g, theta, grad_outputs=vectors, is_grads_batched=True,
                                                retain_graph=True)[0] for g in grads)
            return total / len(x) + self.damping * vectors

        return apply

    def _hessian_matrix(self) -> torch.Tensor:
        """``H + damping I`` in float64, symmetrised: the closed form of a linear head, else Hessian-vector
        products of the basis vectors."""
        if self._linear is not None:
            hessian = self._linear.hessian(self._features, self._probabilities, self.batch_size)
            hessian.diagonal().add_(self.damping)
        else:
            theta = self._flat_theta()
            basis = torch.eye(theta.numel(), dtype=theta.dtype, device=theta.device)
            operator = self._hessian()
            hessian = torch.cat([operator(part) for part in basis.split(self.batch_size)]).double()
        return (hessian + hessian.T) / 2

    def _factorised_inverse(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``g (K, P) -> (H + damping I)^-1 g`` row by row, differentiable in ``g``, from ``H`` formed
        (:meth:`_hessian_matrix`) and factorised once in float64 (the factor is cached with the model state;
        each call solves for its own rows, so a call costs ``K P^2``). A Cholesky factor when ``damping > 0`` and
        the matrix is positive definite; otherwise its eigendecomposition, eigenvalues within rounding (of the
        model's dtype) of 0 dropped (a pseudo-inverse) and negative ones (a non-convex loss) inverted as they
        are."""
        hessian = self._hessian_matrix()
        dtype = self._train_grad.dtype
        if self.damping > 0:
            factor, info = torch.linalg.cholesky_ex(hessian)
            if int(info) == 0:
                return lambda g: torch.cholesky_solve(g.double().T, factor).T.to(dtype)
        values, vectors = torch.linalg.eigh(hessian)
        cutoff = len(hessian) * torch.finfo(dtype).eps * values.abs().max()
        inverse = torch.where(values.abs() > cutoff, 1 / values, torch.zeros_like(values))
        return lambda g: (((g.double() @ vectors) * inverse) @ vectors.T).to(dtype)

    # ---------------------------------------------------------------- iterative solvers

    def _cg(self, v: torch.Tensor) -> torch.Tensor:
        """Batched conjugate gradients, one independent system ``(H + damping I) s = v_b`` per row."""
        solution = torch.zeros_like(v)
        residual = v.clone()
        direction = residual.clone()
        operator = self._hessian()
        rho = (residual * residual).sum(1)
        target = (self.tol * v.norm(dim=1)) ** 2
        for _ in range(self.max_iter or v.shape[1]):
            active = rho > target
            if not bool(active.any()):
                break
            product = operator(direction)
            curvature = (direction * product).sum(1)
            step = torch.where(active & (curvature > 0), rho / curvature.where(curvature > 0, torch.ones_like(rho)),
                               torch.zeros_like(rho))
            solution = solution + step[:, None] * direction
            residual = residual - step[:, None] * product
            new_rho = (residual * residual).sum(1)
            beta = torch.where(active, new_rho / rho.where(rho > 0, torch.ones_like(rho)), torch.zeros_like(rho))
            direction = residual + beta[:, None] * direction
            rho = torch.where(active, new_rho, rho)
        return solution

    def _lissa_scale(self) -> float:
        """``self.scale``, or 1.5x the largest eigenvalue of ``H + damping I`` (30 power iterations)."""
        if self.scale is not None:
            return self.scale
        generator = torch.Generator(device=self._features.device).manual_seed(self.seed)
        theta = self._flat_theta()
        v = torch.randn(1, theta.numel(), generator=generator, device=theta.device, dtype=theta.dtype)
        value = torch.ones(())
        operator = self._hessian()
        for _ in range(30):
            v = v / v.norm()
            product = operator(v)
            value = (v * product).sum()
            v = product
        return 1.5 * abs(value.item())

    def _lissa(self, v: torch.Tensor) -> torch.Tensor:
        """LiSSA (Agarwal et al. 2017) as in Koh & Liang, Sec. 3, averaged over ``repeats`` runs."""
        generator = torch.Generator(device=self._features.device).manual_seed(self.seed)
        n = len(self._features)
        full = self._hessian() if self.lissa_batch_size >= n else None
        total = torch.zeros_like(v)
        for _ in range(self.repeats):
            estimate = v.clone()
            for _ in range(self.depth):
                operator = full or self._hessian(torch.randint(0, n, (self.lissa_batch_size,), generator=generator,
                                                               device=v.device))
                estimate = v + estimate - operator(estimate) / self._scale
            if not bool(torch.isfinite(estimate).all()):
                raise ValueError(f"lissa diverged with scale={self._scale:.4g}: pass a larger scale")
            total += estimate / self._scale
        return total / self.repeats


__all__ = ["Influence", "TopInfluence", "select_parameters", "frozen_prefix", "last_layer", "METHODS"]
