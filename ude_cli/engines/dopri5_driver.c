/* The dopri5 step-size loop of ude's compiled engine, in C (ude_cli/compiled_adaptive.py).
 *
 * Appended by ude_cli/native.py to CasADi's generated code for two functions of one trajectory:
 *   attempt(u, f0, t0, h, p, c, w) -> (u1, f1, scaled)   one Dormand-Prince step and its scaled error
 *   f(t, u, p, c, w) -> (du/dt)                           the right-hand side
 * It performs, operation for operation and in the same order, what AdaptiveSolver._steps and
 * AdaptiveSolver._initial_step do in Python around CasADi's virtual machine (sums of squares taken one
 * value after another, no floating-point contraction), so that both give the same steps bit for bit and
 * a fit may switch from one to the other between two solves. A change here is a change there.
 */
#include <stdlib.h>
#include <string.h>

#define UDE_SAFETY 0.9
#define UDE_IFACTOR 10.0
#define UDE_DFACTOR 0.2
#define UDE_ORDER 5.0

/* return codes (ude_cli/compiled_adaptive.py: DRIVER_*) */
#define UDE_OK 0
#define UDE_TOO_MANY_STEPS 1
#define UDE_UNDERFLOW 2
#define UDE_CAPACITY 3
#define UDE_NO_MEMORY 4
#define UDE_FAILED 5

typedef int (*ude_casadi_fn)(const casadi_real**, casadi_real**, casadi_int*, casadi_real*, int);
typedef int (*ude_casadi_work)(casadi_int*, casadi_int*, casadi_int*, casadi_int*);

typedef struct {
  ude_casadi_fn fn;
  const casadi_real** arg;
  casadi_real** res;
  casadi_int* iw;
  casadi_real* w;
} ude_call;

static int ude_call_init(ude_call* call, ude_casadi_fn fn, ude_casadi_work work) {
  casadi_int n_arg, n_res, n_iw, n_w;
  call->fn = fn;
  if (work(&n_arg, &n_res, &n_iw, &n_w)) return 1;
  call->arg = (const casadi_real**) malloc(sizeof(casadi_real*) * (size_t) (n_arg + 1));
  call->res = (casadi_real**) malloc(sizeof(casadi_real*) * (size_t) (n_res + 1));
  call->iw = (casadi_int*) malloc(sizeof(casadi_int) * (size_t) (n_iw + 1));
  call->w = (casadi_real*) malloc(sizeof(casadi_real) * (size_t) (n_w + 1));
  return !(call->arg && call->res && call->iw && call->w);
}

static void ude_call_free(ude_call* call) {
  free((void*) call->arg);
  free(call->res);
  free(call->iw);
  free(call->w);
}

static int ude_rhs(ude_call* call, casadi_int n_traj, casadi_int n, casadi_real t, const casadi_real* u,
                   const casadi_real* p, casadi_int n_p, const casadi_real* c, casadi_int n_c,
                   const casadi_real* w, casadi_int n_w, casadi_real* out) {
  casadi_int j;
  for (j = 0; j < n_traj; ++j) {
    call->arg[0] = &t;
    call->arg[1] = u + j * n;
    call->arg[2] = p + j * n_p;
    call->arg[3] = c + j * n_c;
    call->arg[4] = w + j * n_w;
    call->res[0] = out + j * n;
    if (call->fn(call->arg, call->res, call->iw, call->w, 0)) return 1;
  }
  return 0;
}

/* Hairer, Norsett and Wanner's initial step (II.4), as AdaptiveSolver._initial_step computes it. */
static int ude_initial_step(ude_call* rhs, casadi_int n_traj, casadi_int n, casadi_real t, const casadi_real* y,
                            const casadi_real* f0, const casadi_real* p, casadi_int n_p, const casadi_real* c,
                            casadi_int n_c, const casadi_real* w, casadi_int n_w, casadi_real rtol,
                            casadi_real atol, casadi_real* scratch, casadi_real* h_out) {
  casadi_int i, N = n_traj * n;
  casadi_real s0 = 0, s1 = 0, s2 = 0, a, d0, d1, d2, h0, h1, h;
  casadi_real* y1 = scratch;
  casadi_real* f1 = scratch + N;
  for (i = 0; i < N; ++i) {
    casadi_real scale = atol + fabs(y[i]) * rtol;
    a = y[i] / scale;
    s0 += a * a;
  }
  for (i = 0; i < N; ++i) {
    casadi_real scale = atol + fabs(y[i]) * rtol;
    a = f0[i] / scale;
    s1 += a * a;
  }
  d0 = sqrt(s0 / (casadi_real) N);
  d1 = sqrt(s1 / (casadi_real) N);
  h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
  for (i = 0; i < N; ++i) y1[i] = y[i] + h0 * f0[i];
  if (ude_rhs(rhs, n_traj, n, t + h0, y1, p, n_p, c, n_c, w, n_w, f1)) return UDE_FAILED;
  for (i = 0; i < N; ++i) {
    casadi_real scale = atol + fabs(y[i]) * rtol;
    a = (f1[i] - f0[i]) / scale;
    s2 += a * a;
  }
  d2 = sqrt(s2 / (casadi_real) N) / h0;
  if (d1 <= 1e-15 && d2 <= 1e-15) {
    h1 = h0 * 1e-3;
    if (1e-6 > h1) h1 = 1e-6;
  } else {
    h1 = pow(0.01 / (d2 > d1 ? d2 : d1), 1.0 / UDE_ORDER);
  }
  h = 100 * h0;
  if (h1 < h) h = h1;
  if (!(isfinite(h) && h > 0)) return UDE_UNDERFLOW;
  *h_out = h;
  return UDE_OK;
}

static casadi_real ude_next_step(casadi_real step, casadi_real ratio) {
  casadi_real dfactor, factor;
  if (ratio == 0) return step * UDE_IFACTOR;
  dfactor = ratio < 1 ? 1.0 : UDE_DFACTOR;
  factor = UDE_SAFETY / pow(ratio, 1.0 / UDE_ORDER);
  if (dfactor > factor) factor = dfactor;
  if (factor > UDE_IFACTOR) factor = UDE_IFACTOR;
  return step * factor;
}

/* dopri5 over times[0..n_times-1] for n_traj trajectories with one step size for all.
 * y0 (n_traj, n); p (n_traj, n_p); c (n_traj, n_c); w (n_traj, n_w): row per trajectory.
 * Writes the accepted states into states (n_traj, capacity + 1, n) (y0 first), each accepted step's
 * start and size, at_output[k] = accepted steps up to times[k], counts = {accepted, evaluations}. */
CASADI_SYMBOL_EXPORT int ude_dopri5(casadi_int n_traj, casadi_int n, const casadi_real* y0, const casadi_real* p,
                                    casadi_int n_p, const casadi_real* c, casadi_int n_c, const casadi_real* w,
                                    casadi_int n_w, const casadi_real* times, casadi_int n_times, casadi_real rtol,
                                    casadi_real atol, casadi_int max_steps, casadi_int capacity,
                                    casadi_real* states, casadi_real* starts, casadi_real* sizes,
                                    casadi_int* at_output, casadi_int* counts) {
  casadi_int N = n_traj * n, i, j, k, accepted = 0, evaluations = 2, tries, current = 0;
  casadi_real t = times[0], h, step, t_next, ratio, sum, proposed;
  int status = UDE_OK;
  ude_call rhs, step_call;
  casadi_real* buffer = (casadi_real*) malloc(sizeof(casadi_real) * (size_t) (5 * N + 1));
  casadi_real *ys[2], *fs[2], *scaled;
  memset(&rhs, 0, sizeof rhs);
  memset(&step_call, 0, sizeof step_call);
  if (!buffer) return UDE_NO_MEMORY;
  ys[0] = buffer; fs[0] = buffer + N; ys[1] = buffer + 2 * N; fs[1] = buffer + 3 * N; scaled = buffer + 4 * N;
  if (ude_call_init(&rhs, f, f_work) || ude_call_init(&step_call, attempt, attempt_work)) {
    status = UDE_NO_MEMORY;
    goto done;
  }
  memcpy(ys[0], y0, sizeof(casadi_real) * (size_t) N);
  for (j = 0; j < n_traj; ++j) memcpy(states + j * (capacity + 1) * n, y0 + j * n, sizeof(casadi_real) * (size_t) n);
  if (ude_rhs(&rhs, n_traj, n, t, ys[0], p, n_p, c, n_c, w, n_w, fs[0])) { status = UDE_FAILED; goto done; }
  status = ude_initial_step(&rhs, n_traj, n, t, ys[0], fs[0], p, n_p, c, n_c, w, n_w, rtol, atol, ys[1], &h);
  if (status != UDE_OK) goto done;
  at_output[0] = 0;
  for (k = 1; k < n_times; ++k) {
    t_next = times[k];
    tries = 0;
    while (t < t_next) {
      if (tries >= max_steps) { status = UDE_TOO_MANY_STEPS; goto done; }
      ++tries;
      step = t_next - t < h ? t_next - t : h;
      if (!(t + step > t)) { status = UDE_UNDERFLOW; goto done; }
      for (j = 0; j < n_traj; ++j) {
        step_call.arg[0] = ys[current] + j * n;
        step_call.arg[1] = fs[current] + j * n;
        step_call.arg[2] = &t;
        step_call.arg[3] = &step;
        step_call.arg[4] = p + j * n_p;
        step_call.arg[5] = c + j * n_c;
        step_call.arg[6] = w + j * n_w;
        step_call.res[0] = ys[1 - current] + j * n;
        step_call.res[1] = fs[1 - current] + j * n;
        step_call.res[2] = scaled + j * n;
        if (step_call.fn(step_call.arg, step_call.res, step_call.iw, step_call.w, 0)) { status = UDE_FAILED; goto done; }
      }
      evaluations += 6;
      sum = 0;
      for (i = 0; i < N; ++i) sum += scaled[i] * scaled[i];
      ratio = sqrt(sum / (casadi_real) N);
      if (!isfinite(ratio)) { status = UDE_UNDERFLOW; goto done; }
      proposed = ude_next_step(step, ratio);
      if (ratio <= 1) {
        if (accepted >= capacity) { status = UDE_CAPACITY; goto done; }
        starts[accepted] = t;
        sizes[accepted] = step;
        t = step == t_next - t ? t_next : t + step;
        current = 1 - current;
        ++accepted;
        for (j = 0; j < n_traj; ++j)
          memcpy(states + (j * (capacity + 1) + accepted) * n, ys[current] + j * n, sizeof(casadi_real) * (size_t) n);
        if (step < h && h > proposed) proposed = h;  /* shortened to land on an output time */
      }
      h = proposed;
    }
    at_output[k] = accepted;
  }
done:
  counts[0] = accepted;
  counts[1] = evaluations;
  ude_call_free(&rhs);
  ude_call_free(&step_call);
  free(buffer);
  return status;
}

/* The reverse sweep over the accepted steps, as AdaptiveSolver._program's mapaccum of
 * vjp(a, pb, cb, wb, u, t0, h, g, p, c, w) -> (g + du1/du^T a, pb + du1/dp^T a, cb + ..., wb + ...):
 * the same function called in the same order, last step first.
 * states (n_traj, stride, n) with the K + 1 accepted states first; seed (n_traj, K + 1, n) the seeds at them;
 * writes the adjoints of y0 (n_traj, n), p (n_traj, n_p), c (n_traj, n_c), w (n_traj, n_w). */
CASADI_SYMBOL_EXPORT int ude_dopri5_reverse(casadi_int n_traj, casadi_int n, casadi_int n_steps, casadi_int stride,
                                            const casadi_real* states, const casadi_real* starts,
                                            const casadi_real* sizes, const casadi_real* seed,
                                            const casadi_real* p, casadi_int n_p, const casadi_real* c,
                                            casadi_int n_c, const casadi_real* w, casadi_int n_w,
                                            casadi_real* y0_adj, casadi_real* p_adj, casadi_real* c_adj,
                                            casadi_real* w_adj) {
  casadi_int j, k, width = n + n_p + n_c + n_w;
  int status = UDE_OK;
  ude_call call;
  casadi_real* buffer = (casadi_real*) malloc(sizeof(casadi_real) * (size_t) (2 * width + 1));
  casadi_real *acc[2];
  memset(&call, 0, sizeof call);
  if (!buffer || ude_call_init(&call, vjp, vjp_work)) { status = UDE_NO_MEMORY; goto done; }
  acc[0] = buffer; acc[1] = buffer + width;
  for (j = 0; j < n_traj; ++j) {
    int current = 0;
    const casadi_real* traj_states = states + j * stride * n;
    const casadi_real* traj_seed = seed + j * (n_steps + 1) * n;
    memcpy(acc[0], traj_seed + n_steps * n, sizeof(casadi_real) * (size_t) n);
    memset(acc[0] + n, 0, sizeof(casadi_real) * (size_t) (n_p + n_c + n_w));
    for (k = n_steps - 1; k >= 0; --k) {
      casadi_real* in = acc[current];
      casadi_real* out = acc[1 - current];
      call.arg[0] = in;
      call.arg[1] = in + n;
      call.arg[2] = in + n + n_p;
      call.arg[3] = in + n + n_p + n_c;
      call.arg[4] = traj_states + k * n;
      call.arg[5] = starts + k;
      call.arg[6] = sizes + k;
      call.arg[7] = traj_seed + k * n;
      call.arg[8] = p + j * n_p;
      call.arg[9] = c + j * n_c;
      call.arg[10] = w + j * n_w;
      call.res[0] = out;
      call.res[1] = out + n;
      call.res[2] = out + n + n_p;
      call.res[3] = out + n + n_p + n_c;
      if (call.fn(call.arg, call.res, call.iw, call.w, 0)) { status = UDE_FAILED; goto done; }
      current = 1 - current;
    }
    memcpy(y0_adj + j * n, acc[current], sizeof(casadi_real) * (size_t) n);
    memcpy(p_adj + j * n_p, acc[current] + n, sizeof(casadi_real) * (size_t) n_p);
    memcpy(c_adj + j * n_c, acc[current] + n + n_p, sizeof(casadi_real) * (size_t) n_c);
    memcpy(w_adj + j * n_w, acc[current] + n + n_p + n_c, sizeof(casadi_real) * (size_t) n_w);
  }
done:
  ude_call_free(&call);
  free(buffer);
  return status;
}
