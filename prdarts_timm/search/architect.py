"""Architecture (alpha) steps: first order, or second order (unrolled, finite-difference Hessian-vector product).

The validation loss is the loss of the supernet as it is: in the pruned phases its forward goes through
``W * m``, so alpha is trained "regarding the pruned weight elements". Gradients come from
``torch.autograd.grad`` and are averaged across processes here, so alpha stays identical on every rank.
"""
from typing import Callable, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..distributed import average_across_processes

__all__ = ['Architect', 'average_across_processes', 'smoothing_kl']

Batch = Tuple[torch.Tensor, torch.Tensor]


def smoothing_kl(model: nn.Module, x: torch.Tensor, logits: torch.Tensor, sigma: float) -> torch.Tensor:
    """Randomized-smoothing consistency: KL(softmax(f(x)) || softmax(f(x + N(0, sigma^2)))) / batch."""
    noisy = model(x + sigma * torch.randn_like(x))
    return F.kl_div(F.log_softmax(noisy, dim=1), F.softmax(logits, dim=1), reduction='batchmean')


class Architect:
    """Updates the supernet's architecture parameters with their own optimizer.

    Args:
        model: the supernet (``arch_parameters()``, ``forward``).
        optimizer: optimizer over ``model.arch_parameters()`` (Adam, lr 3e-4, betas (0.5, 0.999) in the paper).
        second_order: unrolled DARTS step instead of the first-order approximation.
        smoothing_beta, smoothing_sigma: optional extra regularizer on the (pruned) objective,
            ``CE + beta * KL(f(x) || f(x + noise))``; off when beta is 0 (the default, as in the authors' code).
        hessian_epsilon: the finite-difference step is ``hessian_epsilon / ||v||`` (DARTS: 0.01).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, second_order: bool = False,
                 smoothing_beta: float = 0.0, smoothing_sigma: float = 0.25, hessian_epsilon: float = 1e-2,
                 grad_sync: Callable[[Sequence[torch.Tensor]], List[torch.Tensor]] = average_across_processes):
        self.model = model
        self.optimizer = optimizer
        self.second_order = second_order
        self.smoothing_beta = smoothing_beta
        self.smoothing_sigma = smoothing_sigma
        self.hessian_epsilon = hessian_epsilon
        self.grad_sync = grad_sync

    def loss(self, batch: Batch, regularized: bool = True) -> torch.Tensor:
        """Cross-entropy, plus the smoothing term when it is on and ``regularized`` (the validation side)."""
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        if regularized and self.smoothing_beta > 0:
            loss = loss + self.smoothing_beta * smoothing_kl(self.model, x, logits, self.smoothing_sigma)
        return loss

    def alpha_grads(self, train_batch: Batch, val_batch: Batch, inner_params: Sequence[nn.Parameter],
                    xi: float = 0.0, weight_decay: float = 0.0) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """(validation loss, d L_val / d alpha) on this process, before averaging across processes.

        ``inner_params`` are what the current phase trains (weights, or scores in the prune phase); the
        second-order step unrolls one plain SGD step of them (learning rate ``xi``, no momentum, as the
        paper's search optimizer has none) on the training loss, which, like the real weight step, is plain
        cross-entropy: the smoothing term only enters the validation loss, so the finite-difference
        Hessian-vector product compares two noise-free gradients. In the prune phase the unrolled
        parameters are the scores, which the loss sees only through the piecewise-constant top-k mask: the
        finite difference there is near zero unless a perturbation flips the mask (as in the authors' code).
        """
        alphas = list(self.model.arch_parameters())
        if not self.second_order:
            loss = self.loss(val_batch)
            return loss.detach(), list(torch.autograd.grad(loss, alphas))
        params = [p for p in inner_params if p.requires_grad]
        backup = [p.detach().clone() for p in params]
        # theta' = theta - xi * (dL_train/dtheta + wd * theta)
        g_train = torch.autograd.grad(self.loss(train_batch, regularized=False), params, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, g_train):
                p.sub_(xi * ((g if g is not None else 0.0) + weight_decay * p))
        loss = self.loss(val_batch)
        grads = torch.autograd.grad(loss, alphas + params, allow_unused=True)
        d_alpha = [g if g is not None else torch.zeros_like(a) for g, a in zip(grads[:len(alphas)], alphas)]
        d_theta = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads[len(alphas):], params)]
        with torch.no_grad():
            for p, b in zip(params, backup):
                p.copy_(b)
        norm = torch.cat([d.reshape(-1) for d in d_theta]).norm() if d_theta else torch.tensor(0.)
        if xi > 0 and norm > 0:
            r = self.hessian_epsilon / norm
            hvp = self._hessian_vector_product(train_batch, alphas, params, backup, d_theta, r)
            d_alpha = [da - xi * h for da, h in zip(d_alpha, hvp)]
        return loss.detach(), d_alpha

    def _hessian_vector_product(self, train_batch, alphas, params, backup, vector, r):
        grads = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, b, v in zip(params, backup, vector):
                    p.copy_(b + sign * r * v)
            grads.append(torch.autograd.grad(self.loss(train_batch, regularized=False), alphas))
        with torch.no_grad():
            for p, b in zip(params, backup):
                p.copy_(b)
        return [(gp - gn) / (2 * r) for gp, gn in zip(*grads)]

    def step(self, train_batch: Batch, val_batch: Batch, inner_params: Sequence[nn.Parameter],
             xi: float = 0.0, weight_decay: float = 0.0) -> torch.Tensor:
        """One alpha update; returns this process's validation loss."""
        loss, d_alpha = self.alpha_grads(train_batch, val_batch, inner_params, xi, weight_decay)
        d_alpha = self.grad_sync(d_alpha)
        self.optimizer.zero_grad(set_to_none=True)
        for a, g in zip(self.model.arch_parameters(), d_alpha):
            a.grad = g.clone()
        self.optimizer.step()
        return loss
