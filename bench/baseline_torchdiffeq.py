"""Plain torchdiffeq baseline of the Lotka-Volterra UDE benchmark, written from the protocol.

What a user would write without ``ude``: an nn.Module right-hand side, ``torchdiffeq.odeint``
(dopri5, rtol = atol = 1e-6, direct backpropagation), Adam (lr 0.01) and then LBFGS with a
strong-Wolfe line search in chunks of 10 iterations. The protocol is in ``lv_protocol.py``.

Prints one JSON line: time to the MSE target (in-process, from the first iteration), iterations,
solver evaluations, final loss, learned-term RMSE against the truth, ms per Adam iteration
(median) and peak RSS. Example: ``python bench/baseline_torchdiffeq.py --stop-at-target``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import lv_protocol as lv


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="default: %(default)s")
    p.add_argument("--batch", type=int, default=1, help="trajectories with different initial states (default: 1)")
    p.add_argument("--adam", type=int, default=lv.ADAM_ITERATIONS, help="Adam iterations (default: %(default)s)")
    p.add_argument("--lbfgs", type=int, default=lv.LBFGS_ITERATIONS, help="most LBFGS iterations (default: %(default)s)")
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--rtol", type=float, default=1e-6, help="dopri5 tolerance (default: %(default)s)")
    p.add_argument("--atol", type=float, default=1e-6, help="dopri5 tolerance (default: %(default)s)")
    p.add_argument("--target", type=float, default=lv.TARGET, help="training-MSE target (default: %(default)s)")
    p.add_argument("--stop-at-target", action="store_true", help="stop as soon as the loss is below the target")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    import torch
    from torch import nn
    from torchdiffeq import odeint

    torch.set_num_threads(a.threads)
    dtype = torch.float64 if a.dtype == "float64" else torch.float32

    class Rbf(nn.Module):
        def forward(self, z):
            return torch.exp(-z * z)

    class UDE(nn.Module):
        """dx/dt = 1.3 x + NN_1(x, y), dy/dt = -0.8 y + NN_2(x, y)."""

        def __init__(self):
            super().__init__()
            layers: list[nn.Module] = []
            for k, (w, b) in enumerate(lv.glorot_uniform()):
                linear = nn.Linear(w.shape[1], w.shape[0], dtype=dtype)
                with torch.no_grad():
                    linear.weight.copy_(torch.tensor(w))
                    linear.bias.copy_(torch.tensor(b))
                layers += [linear] if k == len(lv.SIZES) - 2 else [linear, Rbf()]
            self.net = nn.Sequential(*layers)
            self.register_buffer("known", torch.tensor([lv.ALPHA, -lv.GAMMA], dtype=dtype))
            self.nfe = 0

        def forward(self, t, u):
            self.nfe += 1
            return self.known * u + self.net(u)

    t_np, u0_np, X_np, Y_np = lv.make_data(a.batch)
    t = torch.tensor(t_np, dtype=dtype)
    u0 = torch.tensor(u0_np, dtype=dtype)  # (B, 2)
    Y = torch.tensor(Y_np, dtype=dtype).transpose(0, 1)  # (T, B, 2), as odeint returns
    model = UDE()

    def loss_fn():
        return ((odeint(model, u0, t, method="dopri5", rtol=a.rtol, atol=a.atol) - Y) ** 2).mean()

    class Reached(Exception):
        pass

    adam_ms, lbfgs_ms, adam_nfe = [], [], []
    iterations, reached_at, stop_reason = 0, None, "completed"
    in_chunk = lambda: 0  # noqa: E731  LBFGS iterations of the running chunk, not yet in `iterations`
    t_start = time.perf_counter()

    def check(value: float) -> None:
        nonlocal reached_at
        if reached_at is None and value < a.target:
            reached_at = (time.perf_counter() - t_start, iterations + in_chunk())
            if a.stop_at_target:
                raise Reached

    try:
        opt = torch.optim.Adam(model.parameters(), lr=a.lr)
        for _ in range(a.adam):
            t0, nfe0 = time.perf_counter(), model.nfe
            iterations += 1
            opt.zero_grad()
            loss = loss_fn()
            check(loss.item())  # stop at the point that reached the target, before stepping away
            loss.backward()
            opt.step()
            adam_ms.append(1e3 * (time.perf_counter() - t0))
            adam_nfe.append(model.nfe - nfe0)

        if a.lbfgs > 0:
            # max_eval 25 (default 12) so that the line searches rarely cut a chunk of 10 short
            opt = torch.optim.LBFGS(model.parameters(), max_iter=10, max_eval=25, history_size=10,
                                    line_search_fn="strong_wolfe")
            state = opt.state[next(iter(model.parameters()))]
            done = 0

            def closure():
                opt.zero_grad()
                loss = loss_fn()
                check(loss.item())
                loss.backward()
                return loss

            while done < a.lbfgs:
                t0, n0 = time.perf_counter(), state.get("n_iter", 0)
                in_chunk = lambda n0=n0: state.get("n_iter", 0) - n0  # noqa: E731
                opt.param_groups[0]["max_iter"] = min(10, a.lbfgs - done)
                try:
                    opt.step(closure)
                finally:  # iterations are counted by LBFGS itself, also when the target stops a chunk
                    k = state.get("n_iter", 0) - n0
                    done += k
                    iterations += k
                if k == 0:
                    stop_reason = "lbfgs converged"
                    break
                lbfgs_ms.append(1e3 * (time.perf_counter() - t0) / k)
    except Reached:
        stop_reason = f"loss below {a.target:g}"
    seconds = time.perf_counter() - t_start

    with torch.no_grad():
        final = float(loss_fn())
        learned = model.net(torch.tensor(X_np[0], dtype=dtype)).numpy()
    out = {
        "implementation": f"baseline-torchdiffeq-dopri5-{a.dtype}",
        "batch": a.batch,
        "stop_reason": stop_reason,
        "target": a.target,
        "time_to_target": round(reached_at[0], 4) if reached_at else None,
        "iterations_to_target": reached_at[1] if reached_at else None,
        "iterations": iterations,
        "seconds": round(seconds, 4),
        "nfe": model.nfe,
        "nfe_per_adam_iteration": statistics.median(adam_nfe) if adam_nfe else None,
        "final_loss": final,
        "learned_term_rmse": lv.rmse(learned, lv.missing_terms(X_np[0])),
        "ms_per_adam_iteration": _median_after_first(adam_ms),
        "ms_per_lbfgs_iteration": _median_after_first(lbfgs_ms),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(out))


def _median_after_first(values: list[float]) -> float | None:
    """Median, leaving out the first value (warm-up) when there are others."""
    rest = values[1:] or values
    return round(statistics.median(rest), 3) if rest else None


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


if __name__ == "__main__":
    main()
