"""The manipulation loop: fine-tune a model so that its explanations meet an objective while its predictions
stay those of the original model (thesis "Training Neural Networks With Manipulated Explanations", Ch. 3;
Heo et al. 2019, "Fooling Neural Network Interpretations via Adversarial Model Manipulation", Eq. 1).

Loss per step: ``alpha * L_attack + (1 - alpha) * L_keep``. The thesis and Heo et al. write
``L = L_keep + lambda * L_attack``; dividing by ``1 + lambda`` (which only rescales the learning rate) gives
``alpha = lambda / (1 + lambda)``, i.e. ``lambda = alpha / (1 - alpha)``.

Data parallelism: when ``torch.distributed`` is initialised (or the environment variable ``WORLD_SIZE`` > 1,
as under ``torchrun``, in which case the process group is created here: gloo on CPU, nccl on CUDA) each rank
takes its share of every global batch through a :class:`~torch.utils.data.DistributedSampler` and the
gradients are averaged across ranks with one ``all_reduce`` per step before the optimiser step. This is the
synchronisation DistributedDataParallel performs; the DDP wrapper itself is not used because the explainer
calls the unwrapped model (``explainer.model is model``) several times per step, including a double backward
through ``torch.autograd.grad(create_graph=True)``, which DDP's reducer does not support.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from veneer.checks import check_positive
from veneer.data import LabeledData
from veneer.explain import Explainer
from veneer.explain.base import check_explainer
from veneer.manipulate.keep import keep_loss
from veneer.manipulate.objectives import Objective
from veneer.models import predict, softplus_activations
from veneer.runs import atomic_write_bytes, seed_everything

CHECKPOINT = "checkpoint.safetensors"


class ManipulationResult(NamedTuple):
    """The manipulated model (eval mode, ReLU restored) and one record per optimiser step:
    ``{"step", "epoch", "loss", "attack", "keep"}`` (losses averaged over the ranks)."""

    model: nn.Module
    history: list[dict[str, float]]


# ---------------------------------------------------------------- distributed helpers


def distributed_context() -> tuple[int, int]:
    """``(world_size, rank)``; initialises the default process group from the environment (``torchrun``)
    when ``WORLD_SIZE`` > 1 and none exists yet: nccl when CUDA is available, gloo otherwise."""
    if not dist.is_available():
        return 1, 0
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 1, 0
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_world_size(), dist.get_rank()


def _all_reduce_mean(flat: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(flat)
        flat /= world
    return flat


def average_gradients(params: list[nn.Parameter], world: int) -> None:
    """Replace every gradient by its mean over the ranks (one coalesced all-reduce)."""
    if world == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = _all_reduce_mean(torch.cat([g.flatten() for g in grads]), world)
    for p, part in zip(params, flat.split([g.numel() for g in grads])):
        p.grad = part.view_as(p).clone()


def _broadcast_parameters(model: nn.Module, world: int) -> None:
    if world > 1:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


# ---------------------------------------------------------------- trainable parameters


def select_trainable(model: nn.Module, trainable) -> list[tuple[str, nn.Parameter]]:
    """Named parameters to fine-tune: all for ``None``/``"all"``, else those under the module-name prefixes in
    ``trainable`` (thesis Sec. 3.7 fine-tunes only some layers). Unknown prefixes raise ``ValueError``."""
    named = list(model.named_parameters())
    if trainable is None or trainable == "all":
        return named
    if isinstance(trainable, str) or not isinstance(trainable, (list, tuple)) or not trainable:
        raise ValueError(f"trainable must be None, 'all' or a non-empty list of module-name prefixes, "
                         f"got {trainable!r}")
    chosen = []
    for prefix in trainable:
        hits = [(n, p) for n, p in named if n == prefix or n.startswith(f"{prefix}.")]
        if not hits:
            raise ValueError(f"trainable prefix {prefix!r} matches no parameter; parameter names: "
                             f"{[n for n, _ in named]}")
        chosen += [hit for hit in hits if hit not in chosen]
    return chosen


@contextlib.contextmanager
def _frozen_except(model: nn.Module, trainable: list[tuple[str, nn.Parameter]]):
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    keep = {name for name, _ in trainable}
    for name, p in model.named_parameters():
        p.requires_grad_(name in keep)
    try:
        yield
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])


# ---------------------------------------------------------------- checkpoints


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"rng.torch": torch.get_rng_state(), "rng.numpy": torch.from_numpy(keys.astype(np.int64))}
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return tensors, {"numpy": [kind, pos, has_gauss, cached], "python": random.getstate()}


def _set_rng_state(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    kind, pos, has_gauss, cached = info["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, state, gauss = info["python"]
    random.setstate((version, tuple(state), gauss))
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])


def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    history: list[dict], fingerprint: dict[str, Any]) -> Path:
    """Write weights, optimiser state, RNG states (torch, NumPy, Python, CUDA), step and history as one
    safetensors file, atomically (temporary file + ``os.replace``)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    state = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    rng_tensors, rng_info = _rng_state()
    tensors.update(rng_tensors)
    metadata = {"step": str(step), "history": json.dumps(history), "fingerprint": json.dumps(fingerprint),
                "param_groups": json.dumps(state["param_groups"]), "optimizer_scalars": json.dumps(scalars),
                "rng": json.dumps(rng_info)}
    path = Path(path)
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata=metadata))
    return path


def load_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                    fingerprint: dict[str, Any]) -> tuple[int, list[dict]]:
    """Restore what :func:`save_checkpoint` wrote into ``model``, ``optimizer`` and the RNGs; return
    ``(step, history)``. A checkpoint of a different configuration raises ``ValueError``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    saved = json.loads(metadata["fingerprint"])
    if saved != json.loads(json.dumps(fingerprint)):
        changed = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
        raise ValueError(f"checkpoint {path} was written by a run with other settings ({', '.join(changed)}); "
                         "use another checkpoint_dir or the same settings")
    tensors = load_file(str(path))
    device = next(model.parameters()).device
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value if name == "step" else value.to(device)
    for index, entry in json.loads(metadata["optimizer_scalars"]).items():
        state.setdefault(int(index), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})
    _set_rng_state(tensors, json.loads(metadata["rng"]))
    return int(metadata["step"]), json.loads(metadata["history"])


# ---------------------------------------------------------------- the loop


def _check_arguments(model, explainer, objective, data, alpha, epochs, lr, batch_size, softplus_beta,
                     checkpoint_dir, checkpoint_every, resume, max_steps) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_explainer(explainer, model, differentiable=True)
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be a veneer.manipulate.Objective (see make_objective), "
                        f"got {type(objective).__name__}")
    if not isinstance(data, LabeledData):
        raise TypeError(f"data must be a veneer.data.LabeledData, got {type(data).__name__}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1] (lambda = alpha / (1 - alpha)), got {alpha!r}")
    check_positive("epochs", epochs, integer=True)
    check_positive("lr", lr)
    check_positive("batch_size", batch_size, integer=True)
    check_positive("checkpoint_every", checkpoint_every, integer=True)
    if softplus_beta is not None:
        check_positive("softplus_beta", softplus_beta)
    if max_steps is not None:
        check_positive("max_steps", max_steps, integer=True)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir (where the checkpoint to continue from lies)")


def manipulate(model: nn.Module, explainer: Explainer, objective: Objective, data: LabeledData,
               keep: str = "ce", alpha: float = 0.5, epochs: int = 1, lr: float = 1e-4, batch_size: int = 64,
               trainable=None, softplus_beta: float | None = 20.0, checkpoint_dir: str | os.PathLike | None = None,
               checkpoint_every: int = 100, resume: bool = False, seed: int = 0, max_steps: int | None = None,
               progress: bool = True) -> ManipulationResult:
    """Fine-tune ``model`` in place so that ``explainer``'s explanations meet ``objective`` while its
    predictions stay the original model's (thesis Ch. 3; Heo et al. 2019, Eq. 1).

    ``explainer`` must be differentiable and bound to ``model``. Each step minimises
    ``alpha * L_attack + (1 - alpha) * L_keep`` (``alpha = lambda / (1 + lambda)`` for the thesis' ``lambda``)
    with Adam at learning rate ``lr`` over the parameters chosen by ``trainable`` (``None``/``"all"`` or
    module-name prefixes, the rest frozen). ``L_attack`` is the objective's loss on the explanation computed
    with ``create_graph=True`` for the labels (or the objective's own targets); ``L_keep`` is ``keep``: ``"ce"``,
    ``"kl"`` or ``"prob_mse"`` (:mod:`veneer.manipulate.keep`) against a frozen copy of the original model.

    During training the model's ReLUs are Softplus(``softplus_beta``) (thesis Sec. 3.2.2: ReLU networks have
    zero second derivatives), swapped in place so the bound explainer sees them; ReLU is back on return.
    ``softplus_beta=None`` trains with the model's own activations. The model stays in eval mode throughout
    (explainers refuse training mode; dropout and batch-norm statistics are therefore frozen).

    Every ``checkpoint_every`` steps, at ``max_steps`` and at the end, ``checkpoint_dir/checkpoint.safetensors``
    is written atomically; ``resume=True`` continues from it (or starts afresh when there is none yet) and ends
    at the same weights as an uninterrupted run with the same arguments. ``max_steps`` stops after that many
    steps in total (time-boxed runs). Distributed data parallelism is described in the module docstring;
    ``batch_size`` is the global batch. Returns ``(model, history)``.
    """
    _check_arguments(model, explainer, objective, data, alpha, epochs, lr, batch_size, softplus_beta,
                     checkpoint_dir, checkpoint_every, resume, max_steps)
    objective.prepare(data)
    world, rank = distributed_context()
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} must be divisible by the number of processes ({world})")
    local_batch = batch_size // world
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    steps_per_epoch = len(sampler) // local_batch
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size={batch_size} exceeds the {len(data)} samples of data")
    total_steps = steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    keep_fn = keep_loss(keep)
    seed_everything(seed)

    device = next(model.parameters()).device
    model.eval()
    original = copy.deepcopy(model).requires_grad_(False)
    reference_explainer = explainer.with_model(original)
    original_logits = predict(original, data.x) if keep != "ce" else torch.zeros(len(data), 0)
    params = select_trainable(model, trainable)
    optimizer = torch.optim.Adam([p for _, p in params], lr=lr)
    _broadcast_parameters(model, world)

    fingerprint = {"objective": repr(objective), "explainer": repr(explainer), "keep": keep, "alpha": alpha,
                   "lr": lr, "batch_size": batch_size, "trainable": trainable, "softplus_beta": softplus_beta,
                   "seed": seed, "world_size": world, "samples": len(data)}
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT
    step, history = 0, []
    with _frozen_except(model, params):
        if resume and path.is_file():
            step, history = load_checkpoint(path, model, optimizer, fingerprint)

        def checkpoint() -> None:
            if path is not None and rank == 0:
                save_checkpoint(path, model, optimizer, step, history, fingerprint)
            if world > 1:
                dist.barrier()

        activations = (contextlib.nullcontext() if softplus_beta is None
                       else softplus_activations(model, softplus_beta))
        bar = tqdm(total=total_steps, initial=step, desc=f"manipulate {objective.name}",
                   disable=not progress or rank != 0)
        with activations, bar:
            while step < total_steps:
                epoch, offset = divmod(step, steps_per_epoch)
                sampler.set_epoch(epoch)
                order = torch.tensor(list(sampler))[:steps_per_epoch * local_batch].view(steps_per_epoch, -1)
                for index in order[offset:]:
                    x, y = data.x[index].to(device), data.y[index].to(device)
                    attack, keep_value = step_losses(model, explainer, reference_explainer, objective, keep_fn,
                                                     x, y, original_logits[index].to(device))
                    loss = alpha * attack + (1 - alpha) * keep_value
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    average_gradients([p for _, p in params], world)
                    optimizer.step()
                    step += 1
                    values = _all_reduce_mean(torch.stack([loss, attack, keep_value]).detach().double(),
                                              world).cpu().tolist()
                    history.append({"step": step, "epoch": epoch + 1, "loss": values[0], "attack": values[1],
                                    "keep": values[2]})
                    bar.update(1)
                    bar.set_postfix(attack=f"{values[1]:.4g}", keep=f"{values[2]:.4g}")
                    if step % checkpoint_every == 0 or step == total_steps:
                        checkpoint()
                    if step == total_steps:
                        break
    return ManipulationResult(model.eval(), history)


def step_losses(model: nn.Module, explainer: Explainer, reference_explainer: Explainer, objective: Objective,
                keep_fn, x: torch.Tensor, y: torch.Tensor, original_logits: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(attack loss, keep loss) of one batch, both differentiable w.r.t. ``model``'s parameters: the
    objective's loss on ``explainer``'s explanation (``create_graph=True``; ``reference_explainer`` is the same
    method on the original model) and ``keep_fn(model(x), y, original_logits)`` (an empty ``original_logits``
    stands for the model's own detached logits). The attack loss is 0 when the objective finds nothing to
    explain."""
    batch = objective.attack_inputs(x, y)
    if len(batch):
        attr = explainer(batch.x, target=batch.target, create_graph=True)
        reference = (reference_explainer(batch.x, target=batch.target).detach() if objective.needs_reference
                     else None)
        attack = objective.loss(attr, batch, reference).mean()
    else:
        attack = torch.zeros((), device=x.device)
    logits = model(x)
    return attack, keep_fn(logits, y, original_logits if original_logits.numel() else logits.detach())


def lambda_to_alpha(lam: float) -> float:
    """The ``alpha`` of :func:`manipulate` for the thesis' weight ``lambda`` of ``L_keep + lambda * L_attack``."""
    if not lam >= 0 or math.isinf(lam):
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    return lam / (1 + lam)
