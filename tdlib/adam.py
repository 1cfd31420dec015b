"""Adam with ``torch.optim.Adam``'s numbers bit for bit, faster on the CPU where its state holds zeros.

A weight whose gradient has been zero at every step so far (one under a dead unit, or one that targeted
dropout dropped at every step) has a second moment ``v`` of exactly 0, and torch's ``sqrt`` (MKL's vector
math in torch's CPU build) takes a slow path for zeros and subnormals: on an AMD EPYC 6x its usual time on
zeros and 35x on subnormals. Under targeted dropout 20-40% of a layer's moments are zeros, and Adam's
square roots then cost a training step more than the dropout's own kernels.

:class:`Adam` performs torch's single-tensor update with the same operations, in the same order, in
float32, with two changes that cannot change a bit:

- torch's own ``sqrt`` is given only the moments ``v >= 2**-126`` (the smallest normal float); where
  ``0 <= v < 2**-126`` the denominator ``sqrt(v) / sqrt(1 - beta2**t) + eps`` is ``eps`` whatever the root
  (a zero's root is 0; a subnormal's, at most about 1.1e-19, divided by the bias correction, is checked at
  each step to be too small to move ``eps`` in float32: otherwise only zeros are taken this way);
- the division by the bias correction, the addition of ``eps`` and ``p + (-step_size * m) / d`` run as one
  compiled pass (each an IEEE operation, rounded as torch rounds it) instead of three with two new tensors.

That square root is not IEEE's: it differs from a correctly rounded one by an ulp for about a fifth of
all floats, so it is kept, as are torch's ``lerp_``, ``mul_`` and ``addcmul_`` (the first uses fused
multiply-adds). A configuration this does not cover (amsgrad, weight decay, maximize, foreach or fused,
capturable or differentiable, a tensor learning rate, a gradient scaler, a parameter or a moment that is not
a contiguous float32 CPU tensor) takes torch's own step. The state and its ``state_dict`` are torch's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from tdlib.fused import CHUNKS_PER_THREAD, _cache_safe, compiled_for, kernel_threads

SMALLEST_NORMAL = np.float32(np.finfo(np.float32).tiny)  # 2**-126
SMALLEST_SUBNORMAL = np.float32(np.finfo(np.float32).smallest_subnormal)  # 2**-149: below it, only 0
# Above the square root of any subnormal: sqrt(2**-126) = 2**-63, and a few ulps for a root that is not
# correctly rounded.
SUBNORMAL_ROOT_BOUND = np.float32(2.0**-63 * (1 + 2.0**-20))
# Options under which torch's step is the single-tensor update this replays
_REPLAYED = {"amsgrad": False, "weight_decay": 0, "maximize": False, "capturable": False,
             "differentiable": False, "decoupled_weight_decay": False}


# Each pass is a parallel loop over blocks of the tensor, each block a call of a plain loop that the
# compiler vectorises (written inside the parallel loop, the same loop ran 4-6x slower, unvectorised).
# error_model="numpy": a float division by zero gives inf as in torch, rather than a check that stops
# vectorisation.


@njit(error_model="numpy")
def _root_operands_block(exp_avg_sq, floor, out):  # pragma: no cover - compiled
    for i in range(exp_avg_sq.shape[0]):
        v = exp_avg_sq[i]
        out[i] = np.float32(1.0) if (v >= np.float32(0.0)) & (v < floor) else v


@_cache_safe
@njit(parallel=True, cache=True)
def _root_operands(exp_avg_sq, floor, out, chunks):  # pragma: no cover - compiled
    """``out`` (n,) = ``exp_avg_sq`` (n,) float32 where it is not in [0, floor), else 1.0: what torch's
    square root is given (a 1.0 it takes on its fast path, and its result goes unused)."""
    n = exp_avg_sq.shape[0]
    per = (n + chunks - 1) // chunks
    for chunk in prange(chunks):
        lo, hi = chunk * per, min(n, (chunk + 1) * per)
        _root_operands_block(exp_avg_sq[lo:hi], floor, out[lo:hi])


@njit(error_model="numpy")
def _apply_block(param, exp_avg, exp_avg_sq, root, floor, correction, eps, step):  # pragma: no cover - compiled
    for i in range(param.shape[0]):
        v = exp_avg_sq[i]
        denom = eps if (v >= np.float32(0.0)) & (v < floor) else root[i] / correction + eps
        param[i] = param[i] + step * exp_avg[i] / denom


@_cache_safe
@njit(parallel=True, cache=True)
def _apply(param, exp_avg, exp_avg_sq, root, floor, correction, eps, step, chunks):  # pragma: no cover - compiled
    """``param`` (n,) += ``step * exp_avg / (root / correction + eps)``, each operation rounded to float32 in
    torch's order; the denominator is ``eps`` where ``exp_avg_sq`` is in [0, floor). All (n,) float32."""
    n = param.shape[0]
    per = (n + chunks - 1) // chunks
    for chunk in prange(chunks):
        lo, hi = chunk * per, min(n, (chunk + 1) * per)
        _apply_block(param[lo:hi], exp_avg[lo:hi], exp_avg_sq[lo:hi], root[lo:hi], floor, correction, eps, step)


class Adam(torch.optim.Adam):
    """``torch.optim.Adam``, the same numbers bit for bit, with the square roots of zero moments skipped
    and the rest of the update in one compiled pass on the CPU (see the module's docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._roots: dict[int, np.ndarray] = {}  # scratch for the square roots, one per size, reused every step

    def _replayable(self) -> bool:
        """Whether every group and parameter is one the compiled update covers."""
        if getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None) is not None:
            return False
        for group in self.param_groups:
            if any(group.get(name, default) != default for name, default in _REPLAYED.items()):
                return False
            if group["foreach"] or group["fused"] or isinstance(group["lr"], Tensor):
                return False
            if any(isinstance(beta, Tensor) for beta in group["betas"]):
                return False
            for p in group["params"]:
                if p.grad is not None and not (compiled_for(p) and p.is_contiguous() and p.grad.is_contiguous()
                                               and not p.grad.is_sparse and not torch.is_complex(p)):
                    return False
                moments = [self.state[p][key] for key in ("exp_avg", "exp_avg_sq") if key in self.state.get(p, {})]
                if not all(compiled_for(m) and m.is_contiguous() for m in moments):  # as a checkpoint may load them
                    return False
        return True

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        if not self._replayable():
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            exp_avgs: list[Tensor] = []
            exp_avg_sqs: list[Tensor] = []
            steps: list[Tensor] = []
            self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, [], steps)
            beta1, beta2 = group["betas"]
            for param, grad, exp_avg, exp_avg_sq, step_t in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
                step_t += 1
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step = step_t.item()
                step_size = group["lr"] / (1 - beta1**step)
                correction = (1 - beta2**step) ** 0.5
                self._update(param, exp_avg, exp_avg_sq, np.float32(correction), np.float32(group["eps"]),
                             np.float32(-step_size))
        return loss

    def _update(self, param: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, correction: np.float32,
                eps: np.float32, step: np.float32) -> None:
        """``param`` += ``step * exp_avg / (sqrt(exp_avg_sq) / correction + eps)``, all the same shape."""
        # Every moment below the smallest normal float has the denominator eps when the largest root of
        # one cannot move eps; otherwise only zeros are skipped (0 / correction + eps is eps exactly).
        subnormals_vanish = SUBNORMAL_ROOT_BOUND / correction + eps == eps
        floor = SMALLEST_NORMAL if subnormals_vanish else SMALLEST_SUBNORMAL
        v = exp_avg_sq.view(-1).numpy()
        r = self._roots.get(v.size)
        if r is None:
            r = self._roots[v.size] = np.empty(v.size, np.float32)
        root = torch.from_numpy(r)
        with kernel_threads() as threads:
            chunks = CHUNKS_PER_THREAD * threads
            _root_operands(v, floor, r, chunks)
            torch.sqrt(root, out=root)
            p, m = param.detach().view(-1).numpy(), exp_avg.view(-1).numpy()
            _apply(p, m, v, r, floor, correction, eps, step, chunks)
