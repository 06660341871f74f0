"""Models known only by their predictions: a scikit-learn, XGBoost or LightGBM classifier, an ONNX file.

:class:`BlackBox` wraps any ``predict_proba`` callable as an ``nn.Module`` whose forward returns the
log-probabilities ``log p`` (N, C): the softmax of them is ``p`` itself, so LIME, KernelSHAP and Occlusion
(which explain ``softmax(model(x))`` or the model's output) and the keep losses (cross-entropy on the output)
treat it as the bundled models' logits. It is not differentiable (``differentiable = False``): a forward pass
on an input that requires a gradient raises, so gradient methods are dropped with that reason
(:func:`veneer.explain.applicable_methods`) before computing anything.

Files: :func:`onnx_model` runs an ONNX graph with onnxruntime (scikit-learn exports with ``skl2onnx``, XGBoost
and LightGBM with ``onnxmltools``); :func:`skops_model` loads a scikit-learn-compatible estimator saved with
``skops.io.dump``, trusting only estimator types of scikit-learn, XGBoost, LightGBM and numpy/scipy. A plain
pickle or joblib file is never loaded (unpickling runs arbitrary code).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

BLACKBOX_SUFFIXES = (".onnx", ".skops")
# skops types trusted when a .skops file lists them (get_untrusted_types): estimators of these packages
TRUSTED_PACKAGES = ("sklearn", "xgboost", "lightgbm", "numpy", "scipy")
# a row of probabilities may miss 1 by this much (float32 exports)
SUM_TOLERANCE = 1e-3


class BlackBox(nn.Module):
    """``predict_proba`` (an (N, F) float array -> (N, ``n_classes``) probabilities) as a module returning the
    log-probabilities (N, C) in the input's dtype (clamped at ``log 1e-12``). ``n_features``: the input width
    it expects (checked on every call, naming both widths), ``None`` to accept any. ``dtype``: the numpy dtype
    handed to ``predict_proba``. Not differentiable: an input that requires a gradient is refused. Its one
    parameter, ``placement``, is empty and frozen (the CPU, float32): what callers read the model's device and
    dtype from."""

    differentiable = False

    def __init__(self, predict_proba: Callable, n_classes: int, n_features: int | None = None,
                 name: str = "black box", dtype=np.float32):
        super().__init__()
        if not callable(predict_proba):
            raise TypeError(f"predict_proba must be callable (rows -> probabilities), got "
                            f"{type(predict_proba).__name__}")
        for argument, value, low in (("n_classes", n_classes, 2), ("n_features", n_features, 1)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ValueError(f"{argument} must be an int >= {low}, got {value!r}")
        self.predict_proba, self.n_classes, self.n_features = predict_proba, n_classes, n_features
        self.name, self.dtype = name, np.dtype(dtype)
        # zero-size and frozen: says the device and dtype to code that reads them from next(model.parameters())
        self.placement = nn.Parameter(torch.empty(0), requires_grad=False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.name} is a black box (not differentiable): it takes tensors only, "
                            f"got {type(x).__name__} (a traced graph cannot see inside it)")
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(f"{self.name} is a black box (not differentiable): gradient methods cannot explain "
                               f"it; use lime, kernel-shap or occlusion")
        if x.ndim != 2 or (self.n_features is not None and x.shape[1] != self.n_features):
            width = f"(N, {self.n_features})" if self.n_features is not None else "(N, F)"
            raise ValueError(f"{self.name} expects rows of shape {width}, got x of shape {tuple(x.shape)}")
        probabilities = np.asarray(self.predict_proba(x.detach().cpu().numpy().astype(self.dtype)), dtype=np.float64)
        if probabilities.shape != (len(x), self.n_classes):
            raise ValueError(f"{self.name}: predict_proba returned shape {probabilities.shape}, expected "
                             f"({len(x)}, {self.n_classes}) probabilities")
        if not np.isfinite(probabilities).all() or (probabilities < -SUM_TOLERANCE).any() \
                or np.abs(probabilities.sum(1) - 1).max(initial=0) > SUM_TOLERANCE:
            raise ValueError(f"{self.name}: predict_proba must return probabilities (rows >= 0 summing to 1); got "
                             f"row sums {probabilities.sum(1)[:3].round(4).tolist()}...")
        logp = np.log(np.clip(probabilities, 1e-12, 1.0))
        return torch.from_numpy(logp).to(device=x.device, dtype=x.dtype)

    def extra_repr(self) -> str:
        return f"{self.name!r}, n_classes={self.n_classes}, n_features={self.n_features}"


def has_gradients(model: nn.Module) -> bool:
    """False for a model that declares ``differentiable = False`` (a :class:`BlackBox`, a scaffolded model): the
    one test every entry point uses to give such a model LIME/KernelSHAP and priors instead of gradient methods
    and twins."""
    return getattr(model, "differentiable", True) is not False


def _static(dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def onnx_model(path: str | Path, output: str | None = None) -> BlackBox:
    """The classifier in the ONNX file ``path`` as a :class:`BlackBox` run by onnxruntime on the CPU.

    The graph must take one (N, F) float or double input and give an (N, C) probability tensor: the output
    named ``output``, else the one named ``"probabilities"`` (skl2onnx), else the last rank-2 tensor output.
    skl2onnx's default ZipMap output (a list of dicts) is refused: export with
    ``options={id(model): {"zipmap": False}}``. The widths come from the graph (or, where they are dynamic, C
    from one run on a row of zeros)."""
    import onnxruntime

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; pass an .onnx file (e.g. skl2onnx.to_onnx(model, X[:1]))")
    try:
        session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for unreadable graphs
        raise ValueError(f"{file} is not an ONNX model onnxruntime can load: {str(err).splitlines()[0]}") from err
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 2 or inputs[0].type not in ("tensor(float)", "tensor(double)"):
        raise ValueError(f"{file}: expected one (N, F) float input, got "
                         f"{[(i.name, i.type, i.shape) for i in inputs]}")
    tensors = [o for o in session.get_outputs() if o.type.startswith("tensor(") and len(o.shape) == 2]
    names = [o.name for o in session.get_outputs()]
    if output is not None:
        chosen = [o for o in tensors if o.name == output]
        if not chosen:
            raise ValueError(f"{file}: output={output!r} is not an (N, C) tensor output; outputs: {names}")
    else:
        chosen = [o for o in tensors if o.name == "probabilities"] or tensors[-1:]
        if not chosen:
            raise ValueError(f"{file}: no (N, C) probability tensor among the outputs {names} (a ZipMap output? "
                             f"export with skl2onnx options={{id(model): {{'zipmap': False}}}})")
    source, target = inputs[0], chosen[0]
    dtype = np.float32 if source.type == "tensor(float)" else np.float64
    n_features = _static(source.shape[1])

    def predict_proba(rows: np.ndarray) -> np.ndarray:
        return session.run([target.name], {source.name: rows.astype(dtype)})[0]

    n_classes = _static(target.shape[1])
    if n_classes is None:
        if n_features is None:
            raise ValueError(f"{file}: both the input width and the number of classes are dynamic; export with a "
                             f"fixed number of features")
        n_classes = int(predict_proba(np.zeros((1, n_features), dtype)).shape[1])
    return BlackBox(predict_proba, n_classes, n_features, file.name, dtype)


def _trusted(types: list[str]) -> list[str]:
    return [t for t in types if t.split(".")[0] in TRUSTED_PACKAGES]


def skops_model(path: str | Path) -> BlackBox:
    """The classifier saved in ``path`` with ``skops.io.dump`` as a :class:`BlackBox` of its ``predict_proba``.

    The types :func:`skops.io.get_untrusted_types` lists are trusted only when they belong to scikit-learn,
    XGBoost, LightGBM, numpy or scipy; any other type (a user's class, ``builtins.eval``, ...) refuses the
    file, naming it. A file that is not a skops archive (a pickle or joblib file renamed ``.skops``) is
    refused without being read further: re-save the model with ``skops.io.dump``."""
    from skops.io import get_untrusted_types, load

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; save the model with skops.io.dump(model, path)")
    if not zipfile.is_zipfile(file):
        raise ValueError(f"{file} is not a skops file (skops.io.dump writes a zip archive); a pickle or joblib file "
                         f"is never loaded, as unpickling runs arbitrary code: re-save the model with skops.io.dump")
    untrusted = get_untrusted_types(file=file)
    refused = sorted(set(untrusted) - set(_trusted(untrusted)))
    if refused:
        raise ValueError(f"{file} holds types outside {', '.join(TRUSTED_PACKAGES)}, which are not loaded: {refused}")
    estimator = load(file, trusted=_trusted(untrusted))
    if not hasattr(estimator, "predict_proba") or not hasattr(estimator, "classes_"):
        raise ValueError(f"{file} holds a {type(estimator).__name__}, not a fitted classifier with predict_proba "
                         f"and classes_")
    n_features = getattr(estimator, "n_features_in_", None)
    return BlackBox(estimator.predict_proba, len(estimator.classes_), None if n_features is None else int(n_features),
                    file.name)


_LOADERS = {".onnx": onnx_model, ".skops": skops_model}


def load_blackbox(path: str | Path) -> BlackBox:
    """The model file ``path`` by its suffix: ``.onnx`` (:func:`onnx_model`) or ``.skops`` (:func:`skops_model`)."""
    suffix = Path(path).suffix.lower()
    if suffix not in _LOADERS:
        raise ValueError(f"a black-box model file must end in one of {BLACKBOX_SUFFIXES}, got {str(path)!r}")
    return _LOADERS[suffix](path)
