"""FlatParameters: a model's trainable tensors as views of one buffer, without changing what training does."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ude_cli.fitting.flat_parameters import FlatParameters


def tensors(n_starts: int = 3, seed: int = 0) -> dict[str, nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    shapes = {"w0": (n_starts, 2, 5), "b0": (n_starts, 5), "k": (n_starts, 1), "w1": (n_starts, 5, 2)}
    return {n: nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64)) for n, s in shapes.items()}


def loss_of(params: dict[str, torch.Tensor]) -> torch.Tensor:
    x = torch.tensor([[0.3, -1.2]], dtype=torch.float64)
    h = torch.tanh(torch.einsum("bi,sio->so", x, params["w0"]) + params["b0"])
    out = torch.einsum("si,sio->so", h, params["w1"]) * params["k"]
    return (out ** 2).sum()


def test_views_share_the_buffers_and_the_values_are_kept():
    params = tensors()
    before = {n: p.detach().clone() for n, p in params.items()}
    flat = FlatParameters(params, 3)
    for n, p in params.items():
        assert torch.equal(p.detach(), before[n])
        assert p.untyped_storage().data_ptr() == flat.parameter.untyped_storage().data_ptr()
    with torch.no_grad():
        flat.parameter.add_(1.0)
    assert torch.equal(params["k"].detach(), before["k"] + 1)
    loss_of(params).backward()
    assert flat.grad.abs().sum() > 0
    assert torch.equal(flat.views(flat.grad)["w0"], params["w0"].grad)


def test_adam_on_the_buffer_follows_adam_on_each_tensor():
    separate, joined = tensors(), tensors()
    flat = FlatParameters(joined, 3)
    opt_a = torch.optim.Adam(list(separate.values()), lr=0.05)
    opt_b = torch.optim.Adam([flat.parameter], lr=0.05)
    for _ in range(20):
        opt_a.zero_grad(set_to_none=True)
        loss_of(separate).backward()
        opt_a.step()
        flat.zero_grad()
        loss_of(joined).backward()
        opt_b.step()
    for n in separate:  # elementwise the same update (vectorised or not: rounding apart)
        torch.testing.assert_close(joined[n].detach(), separate[n].detach(), rtol=1e-12, atol=1e-14)


def test_a_gradient_dropped_elsewhere_is_bound_again():
    params = tensors()
    flat = FlatParameters(params, 3)
    params["b0"].grad = None  # as a module's zero_grad(set_to_none=True) would
    flat.zero_grad()
    loss_of(params).backward()
    assert torch.equal(flat.views(flat.grad)["b0"], params["b0"].grad)
    assert params["b0"].grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_gradient_is_seen(bad):
    flat = FlatParameters(tensors(), 3)
    assert flat.gradient_finite()
    flat.grad[7] = bad
    assert not flat.gradient_finite()
    flat.grad.fill_(1e308)  # a sum that overflows is not a non-finite gradient
    assert flat.gradient_finite()


def test_best_values_are_kept_per_start():
    params = tensors()
    flat = FlatParameters(params, 3)
    best = flat.parameter.detach().clone()
    with torch.no_grad():
        flat.parameter.mul_(2)
    flat.where(torch.tensor([False, True, False]), flat.parameter.detach(), best)
    views = flat.views(best)
    for n, p in params.items():
        assert torch.equal(views[n][1], p.detach()[1])
        assert torch.equal(views[n][0], p.detach()[0] / 2) and torch.equal(views[n][2], p.detach()[2] / 2)
    assert torch.equal(flat.flatten(views), best)


def test_a_checkpoint_with_an_optimizer_state_per_tensor_resumes_afresh(tmp_path):
    """A checkpoint of the version before the buffer kept Adam's state per tensor: it cannot be loaded
    into the one-buffer optimiser; training goes on from the checkpoint's parameters with a fresh state."""
    from ude_cli.fitting.train import TrainState, train
    from ude_cli.likelihood.objective import Objective
    from ude_cli.progress import SilentMonitor

    from .helpers import model
    from .test_native import tiny

    m = model(tiny(tmp_path, iterations=6), tmp_path)
    params = [p for p in m.parameters() if p.requires_grad]
    old = torch.optim.Adam(params, lr=0.01)  # one state per tensor, as saved before
    state = TrainState(done=3, iteration=3, optimizer_state=old.state_dict())

    class Messages(SilentMonitor):
        seen: list[str] = []

        def message(self, text):
            self.seen.append(text)

    result = train(m, Objective(m, m.problem.config.training.loss), m.problem.config.training,
                   monitor=Messages(), state=state)
    assert any("optimizer state has another layout" in t for t in Messages.seen)
    assert result.iterations > 3 and math.isfinite(float(result.final_loss.min()))


def test_after_training_each_parameter_has_its_own_memory(tmp_path):
    from ude_cli.fitting.train import train
    from ude_cli.likelihood.objective import Objective

    from .helpers import model
    from .test_native import tiny

    m = model(tiny(tmp_path, iterations=4), tmp_path, n_starts=2)
    train(m, Objective(m, m.problem.config.training.loss), m.problem.config.training)
    for name, p in m.named_parameters():
        if p.requires_grad:
            assert p.untyped_storage().nbytes() == p.numel() * p.element_size(), name
            assert p.grad is None, name
