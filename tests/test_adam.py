"""tdlib's Adam: torch.optim.Adam's numbers bit for bit, on the moments that make torch's square root slow
(zeros, subnormals) and on ordinary ones, on one thread and two, and torch's own step where it does not apply."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from tdlib import adam as adam_module
from tdlib.adam import Adam

SHAPES = ((37, 29), (29,), (3, 4, 5), (), (0,))


def bits(t: Tensor) -> Tensor:
    return t.detach().contiguous().view(torch.int32)


def gradients(shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    """A gradient with what training gives Adam: entries zero at every step (dead or always-dropped
    weights: second moment exactly 0), ones so small that their second moment is subnormal, zeros now and
    then, and ordinary values across many scales."""
    n = torch.Size(shape).numel()
    position = torch.arange(n).view(shape)
    grad = torch.randn(shape, generator=g) * 10.0 ** float(torch.randint(-12, 3, (), generator=g))
    grad = grad * (torch.rand(shape, generator=g) < 0.7)
    tiny = position % 5 == 1
    grad[tiny] = torch.randn(int(tiny.sum()), generator=g) * 1e-20
    grad[position % 5 == 0] = 0.0
    return grad


def run_both(seed: int, options: dict, steps: int, threads: int) -> tuple[list[Tensor], list[Tensor], Adam,
                                                                          torch.optim.Adam]:
    """The same parameters and gradients through tdlib's Adam and torch's; returns both sets and optimizers."""
    g = torch.Generator().manual_seed(seed)
    start = [torch.randn(shape, generator=g) for shape in SHAPES]
    ours = [p.clone().requires_grad_() for p in start]
    theirs = [p.clone().requires_grad_() for p in start]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = Adam(ours, **options), torch.optim.Adam(theirs, **options)
        for _ in range(steps):
            for p, q in zip(ours, theirs):
                grad = gradients(tuple(p.shape), g)
                p.grad, q.grad = grad.clone(), grad
            a.step()
            b.step()
    finally:
        torch.set_num_threads(previous)
    return ours, theirs, a, b


def assert_same(ours: list[Tensor], theirs: list[Tensor], a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
    for p, q in zip(ours, theirs):
        assert torch.equal(bits(p), bits(q))
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(bits(a.state[p][key]), bits(b.state[q][key]))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1),
       lr=st.sampled_from([1e-3, 3e-2, 1e-5]),
       eps=st.sampled_from([1e-8, 1e-3, 1e-12, 1e-20, 0.0]),
       betas=st.sampled_from([(0.9, 0.999), (0.5, 0.9), (0.0, 0.99999)]),
       threads=st.sampled_from([1, 2]))
def test_the_same_bits_as_torchs_adam(seed: int, lr: float, eps: float, betas: tuple[float, float],
                                      threads: int) -> None:
    """Every parameter and every state tensor equal to torch's, bit for bit, step after step: with eps so
    small that a subnormal moment's root moves it (1e-20), or zero (a zero moment divides by zero)."""
    ours, theirs, a, b = run_both(seed, {"lr": lr, "eps": eps, "betas": betas}, 60, threads)
    zeros = sum(int((a.state[p]["exp_avg_sq"] == 0).sum()) for p in ours)
    subnormal = sum(int(((s := a.state[p]["exp_avg_sq"]) > 0).logical_and(s < 2.0**-126).sum()) for p in ours)
    assert zeros and subnormal  # the moments that take the shortcut are there
    assert_same(ours, theirs, a, b)


def test_the_compiled_update_runs_on_the_default_options(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    apply = adam_module._apply
    monkeypatch.setattr(adam_module, "_apply", lambda *args: calls.append(args[0].size) or apply(*args))
    ours, theirs, a, b = run_both(0, {"lr": 1e-3}, 3, 1)
    assert sorted(calls) == sorted([torch.Size(s).numel() for s in SHAPES] * 3)
    assert_same(ours, theirs, a, b)


@pytest.mark.parametrize("options", [{"amsgrad": True}, {"weight_decay": 0.1}, {"maximize": True},
                                     {"foreach": True}, {"lr": torch.tensor(1e-3)}],
                         ids=["amsgrad", "weight_decay", "maximize", "foreach", "tensor_lr"])
def test_options_it_does_not_replay_take_torchs_step(options: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adam_module, "_apply", lambda *args: pytest.fail("the compiled update ran"))
    ours, theirs, a, b = run_both(1, options, 5, 1)
    assert_same(ours, theirs, a, b)


def test_a_parameter_it_cannot_run_on_takes_torchs_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adam_module, "_apply", lambda *args: pytest.fail("the compiled update ran"))
    for p in (torch.zeros(4, 3, dtype=torch.float64, requires_grad=True),
              torch.zeros(3, 4).t().requires_grad_()):
        q = p.detach().clone().requires_grad_()
        a, b = Adam([p], lr=1e-2), torch.optim.Adam([q], lr=1e-2)
        for step in range(3):
            grad = torch.full(p.shape, float(step) - 1.0, dtype=p.dtype)
            p.grad, q.grad = grad.clone(), grad
            a.step()
            b.step()
        assert torch.equal(p, q)


def resume_and_step(ours: list[Tensor], theirs: list[Tensor], a: Adam, b: torch.optim.Adam, state: dict,
                    seed: int, steps: int) -> None:
    """``a`` resumes from ``state`` (written by ``b``), ``ours`` from ``theirs``; both then take ``steps`` steps."""
    a.load_state_dict(state)
    for p, q in zip(ours, theirs):
        p.data.copy_(q.data)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p, q in zip(ours, theirs):
            grad = gradients(tuple(p.shape), g)
            p.grad, q.grad = grad.clone(), grad
        a.step()
        b.step()


def test_state_moves_between_torchs_adam_and_this_one() -> None:
    """A checkpoint written by either optimizer resumes in the other with the same bits: the state is torch's."""
    ours, theirs, a, b = run_both(2, {"lr": 1e-3}, 10, 1)
    # as from a file: torch.load gives tensors of their own
    resume_and_step(ours, theirs, a, b, copy.deepcopy(b.state_dict()), seed=3, steps=10)
    assert_same(ours, theirs, a, b)


def test_a_state_it_cannot_run_on_takes_torchs_step() -> None:
    """Moments loaded with strides of their own (a checkpoint written from a transposed state, say) are
    stepped by torch's update: the compiled one reads each tensor as one flat run of memory."""
    ours, theirs, a, b = run_both(4, {"lr": 1e-3}, 5, 1)
    state = copy.deepcopy(b.state_dict())
    for moments in state["state"].values():
        for key in ("exp_avg", "exp_avg_sq"):
            if moments[key].dim() == 2:
                moments[key] = moments[key].t().contiguous().t()  # the same values, column-major
    resume_and_step(ours, theirs, a, b, state, seed=5, steps=5)
    assert not all(a.state[p]["exp_avg"].is_contiguous() for p in ours)  # still as loaded
    assert_same(ours, theirs, a, b)


def test_the_closure_is_evaluated_and_its_loss_returned() -> None:
    params = [torch.linspace(-1, 1, 7, requires_grad=True) for _ in range(2)]
    optimizers = Adam([params[0]], lr=0.1), torch.optim.Adam([params[1]], lr=0.1)
    for p, optimizer in zip(params, optimizers):

        def closure(p: Tensor = p) -> Tensor:
            p.grad = None
            loss = (p * p).sum()
            loss.backward()
            return loss

        assert optimizer.step(closure).item() == pytest.approx(28 / 9)
    assert torch.equal(bits(params[0]), bits(params[1]))
