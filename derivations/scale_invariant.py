"""Sympy derivations of the norm laws of scale-invariant weight groups (docs/theory.md §6).

Run ``python derivations/scale_invariant.py [out.md]``: it derives every equilibrium, angular update and
relaxation law used by ``widelimit.dynamics.norms_closed`` from the discrete optimiser updates, checks each
step symbolically, and writes ``derivations/scale_invariant.md`` (Markdown with LaTeX). ``main(out_path)``
returns a dict ``{check name: bool}``; every value must be True.

Method. For a scale-invariant group the loss gradient is orthogonal to ``w`` and ``||g||^2 = G/||w||^2``.
With uncorrelated (noise-dominated) gradients the second moments of the coordinates obey the same linear
recursion as a linear model driven by isotropic noise of per-coordinate variance ``s`` with ``d s = G/x``
(``x = ||w||^2``). We (1) solve that recursion for its stationary second moments (a discrete Lyapunov
equation, exact in ``eta*lam``), (2) impose the self-consistency ``d s = G/x``, (3) expand in
``eta -> 0`` for the leading laws, and (4) eliminate the fast buffer moments adiabatically to get the slow
ODE for ``x`` and its relaxation rate.
"""
from __future__ import annotations

import sys
from pathlib import Path

import sympy as sp

eta, lam, G, d, s, mu, b1 = sp.symbols("eta lambda G d s mu beta_1", positive=True)
x, u, k, u0, x0 = sp.symbols("x u k u_0 x_0", positive=True)
W, C, V = sp.symbols("W C V")  # E[w^2], E[w M], E[M^2] per coordinate (M: buffer before the step)


def _is_zero(expr) -> bool:
    return sp.simplify(sp.together(sp.expand(expr))) == 0


def _lead(expr, var=eta, order=1):
    """Leading coefficient ``lim expr/var**order`` at ``var -> 0`` of a rational ``expr`` that is
    ``O(var**order)`` (if it is not, the result is infinite/NaN and the check using it fails)."""
    return sp.factor(sp.cancel(expr / var ** order).subs(var, 0))


# --------------------------------------------------------------------------------------------------
# 1. Plain SGD: exact map
# --------------------------------------------------------------------------------------------------
def sgd_section(checks: dict) -> str:
    a = (1 - eta * lam) ** 2
    xmap = a * x + eta ** 2 * G / x                     # exact: g . w = 0, ||g||^2 = G/x
    xs = sp.sqrt(eta * G / (lam * (2 - eta * lam)))
    checks["sgd: exact fixed point x*^2 = eta G/(lam (2 - eta lam))"] = _is_zero(xmap.subs(x, xs) - xs)
    # angle: w' = (1 - eta lam) w - eta g  =>  cos(theta) = (1 - eta lam) ||w|| / ||w'||; at x' = x:
    cos_eq = (1 - eta * lam) * sp.sqrt(xs) / sp.sqrt(xmap.subs(x, xs))
    checks["sgd: cos(angle) = 1 - eta lam at the fixed point"] = _is_zero(cos_eq - (1 - eta * lam))
    e = sp.Symbol("e", positive=True)
    checks["sgd: arccos(1 - e) = sqrt(2 e) (1 + O(e))"] = sp.limit(sp.acos(1 - e) / sp.sqrt(2 * e), e, 0) == 1
    slope = sp.diff(xmap, x).subs(x, xs)
    checks["sgd: linearised map factor 2(1-eta lam)^2 - 1"] = _is_zero(slope - (2 * a - 1))
    # continuous limit: keep first order in eta*lam and the eta^2 G source; u = x^2
    dxdk = -2 * eta * lam * x + eta ** 2 * G / x
    dudk = sp.expand(2 * x * dxdk).subs(x, sp.sqrt(u))
    checks["sgd: du/dk = -4 eta lam u + 2 eta^2 G (linear)"] = _is_zero(dudk - (-4 * eta * lam * u + 2 * eta ** 2 * G))
    uf = sp.Function("u")
    sol = sp.dsolve(sp.Eq(uf(k).diff(k), -4 * eta * lam * uf(k) + 2 * eta ** 2 * G), uf(k),
                    ics={uf(0): u0}).rhs
    ustar = eta * G / (2 * lam)
    checks["sgd: u(k) = u* + (u0 - u*) exp(-4 eta lam k)"] = _is_zero(
        sol - (ustar + (u0 - ustar) * sp.exp(-4 * eta * lam * k)))
    sol0 = sp.dsolve(sp.Eq(uf(k).diff(k), 2 * eta ** 2 * G), uf(k), ics={uf(0): u0}).rhs
    checks["sgd, lam = 0: u = u0 + 2 eta^2 G k (||w||^4 grows linearly)"] = _is_zero(sol0 - (u0 + 2 * eta ** 2 * G * k))
    checks["sgd: exact x*^2 -> eta G/(2 lam) as eta lam -> 0"] = _is_zero(
        sp.limit(xs ** 2 / (eta * G / (2 * lam)), eta, 0) - 1)
    return rf"""
## 1. SGD with L2 (exact)

Update $w_{{k+1}} = (1-\eta\lambda) w_k - \eta g_k$ with $g\cdot w = 0$ and $\|g\|^2 = G/\|w\|^2$ (scale invariance;
$G=\|\nabla\ell(\hat w)\|^2$ at unit norm). With $x=\|w\|^2$ the norm map is **exact**:

$$x_{{k+1}} = {sp.latex(xmap)}.$$

* Fixed point: $x_*^2 = {sp.latex(xs**2)} \approx \dfrac{{\eta G}}{{2\lambda}}$, effective learning rate
  $\eta/x_* \approx \sqrt{{2\eta\lambda/G}}$.
* Angle between $w_k$ and $w_{{k+1}}$: $\cos\theta = (1-\eta\lambda)\sqrt{{x_k/x_{{k+1}}}}$, so at the fixed point
  $\cos\theta_* = 1-\eta\lambda$ **exactly**, $\theta_* = \sqrt{{2\eta\lambda}} + O((\eta\lambda)^{{3/2}})$, whatever $G$.
* Linearised map: $\delta x_{{k+1}} = (2(1-\eta\lambda)^2-1)\,\delta x_k$, relaxation time
  $-1/\ln(1-4\eta\lambda+2\eta^2\lambda^2) \approx 1/(4\eta\lambda)$ steps.
* Continuous limit (first order in $\eta\lambda$): $\dot x = -2\eta\lambda x + \eta^2 G/x$, and $u = x^2 = \|w\|^4$
  obeys the **linear** ODE $\dot u = -4\eta\lambda u + 2\eta^2 G$, solved exactly by
  $$u(k) = {sp.latex(ustar)} + \left(u_0 - {sp.latex(ustar)}\right) e^{{-4\eta\lambda k}}.$$
  $\|w\|^4$ relaxes at rate $4\eta\lambda$ per step from any initial norm.
* Without L2: $u(k) = u_0 + 2\eta^2 G k$: $\|w\|$ grows like $k^{{1/4}}$ and $\eta_{{\rm eff}} = \eta/\|w\|^2 \sim k^{{-1/2}}$.
"""


# --------------------------------------------------------------------------------------------------
# 2. Linear filters: heavy ball, Nesterov, AdamW, Adam + L2
# --------------------------------------------------------------------------------------------------
def _moments_heavy_ball(Wv, Cv, Vv, noise, decay):
    """One step of HB with coupled L2: M' = mu M + h, h = xi + decay w, w' = w - eta M'."""
    MM = mu ** 2 * Vv + 2 * mu * decay * Cv + decay ** 2 * Wv + noise
    wM = mu * Cv + decay * Wv
    W1 = Wv - 2 * eta * wM + eta ** 2 * MM
    C1 = wM - eta * MM
    D2 = eta ** 2 * MM
    return W1, C1, MM, D2


def _moments_nesterov(Wv, Cv, Vv, noise, decay):
    """Nesterov (optax): M' = mu M + h, w' = w - eta (h + mu M'), h = xi + decay w."""
    hh = noise + decay ** 2 * Wv
    hw = decay * Wv
    hM = decay * Cv
    MM = mu ** 2 * Vv + 2 * mu * hM + hh
    wM = mu * Cv + hw
    hMn = mu * hM + hh
    wD = -eta * (hw + mu * wM)
    D2 = eta ** 2 * (hh + 2 * mu * hMn + mu ** 2 * MM)
    DM = -eta * (hMn + mu * MM)
    return Wv + 2 * wD + D2, wM + DM, MM, D2


def _moments_adamw(Wv, Cv, Vv, noise, decay):
    """AdamW at stationarity (bias corrections -> 1): M' = b1 M + (1-b1) n, w' = (1 - eta decay) w - eta M'."""
    MM = b1 ** 2 * Vv + (1 - b1) ** 2 * noise
    wM = b1 * Cv
    W1 = (1 - eta * decay) ** 2 * Wv - 2 * eta * (1 - eta * decay) * wM + eta ** 2 * MM
    C1 = (1 - eta * decay) * wM - eta * MM
    return W1, C1, MM, eta ** 2 * MM


def _stationary(step, noise, decay):
    W1, C1, V1, D2 = step(W, C, V, noise, decay)
    sol = sp.solve([W1 - W, C1 - C, V1 - V], [W, C, V], dict=True)[0]
    return sp.factor(sol[W]), sp.factor(D2.subs(sol))


def _slow_rate(step, noise, decay):
    """Adiabatic elimination: solve the buffer moments C, V at fixed W, return W' - W."""
    W1, C1, V1, _ = step(W, C, V, noise, decay)
    sol = sp.solve([C1 - C, V1 - V], [C, V], dict=True)[0]
    return sp.cancel(W1.subs(sol) - W)


def exact_equilibrium(optimizer: str):
    """Fixed point of the moment recursion (A1), exact in ``eta*lam``, as a sympy expression:
    ``x*^2`` in terms of ``eta, lam, G, mu`` for 'sgd', 'momentum', 'nesterov'; ``x*`` in terms of
    ``eta, lam, d, beta_1`` for 'adamw' (eps = 0). Used by the tests to check the numerical map."""
    if optimizer == "sgd":
        return eta * G / (lam * (2 - eta * lam))
    if optimizer in ("momentum", "nesterov"):
        step = _moments_heavy_ball if optimizer == "momentum" else _moments_nesterov
        Wst, _ = _stationary(step, s, lam)
        return sp.factor(G * Wst / s)          # x = d W, d s = G/x  =>  x^2 = G W/s
    if optimizer == "adamw":
        Wst, _ = _stationary(_moments_adamw, 1, lam)
        return sp.factor(d * Wst)
    raise ValueError(f"optimizer must be 'sgd', 'momentum', 'nesterov' or 'adamw', got {optimizer!r}")


def momentum_section(checks: dict) -> str:
    out = []
    # impulse responses
    def sums(a, b, c1, c2):
        """S = sum_j c_j and S2 = sum_j c_j^2 for c_0 = c1 + b c2, c_j = c2 b a^j: the buffer's impulse
        response M_j = b a^j has X = sum M_j = b + a X and Y = sum M_j^2 = b^2 + a^2 Y."""
        X, Y = sp.symbols("X Y")
        Xv = sp.solve(sp.Eq(X, b + a * X), X)[0]
        Yv = sp.solve(sp.Eq(Y, b ** 2 + a ** 2 * Y), Y)[0]
        return sp.factor(c1 + c2 * Xv), sp.factor((c1 + c2 * b) ** 2 + c2 ** 2 * (Yv - b ** 2))

    S_hb, S2_hb = sums(mu, 1, 0, 1)
    S_nag, S2_nag = sums(mu, 1, 1, mu)
    S_ad, S2_ad = sums(b1, 1 - b1, 0, 1)
    checks["impulse sums: S_hb = S_nag = 1/(1-mu), S_adam = 1"] = (
        _is_zero(S_hb - 1 / (1 - mu)) and _is_zero(S_nag - 1 / (1 - mu)) and _is_zero(S_ad - 1))
    checks["impulse sums: S2_hb = 1/(1-mu^2), S2_adam = (1-b1)/(1+b1)"] = (
        _is_zero(S2_hb - 1 / (1 - mu ** 2)) and _is_zero(S2_ad - (1 - b1) / (1 + b1)))
    checks["impulse sums: S2_nag = (1+mu)^2 + mu^4/(1-mu^2)"] = _is_zero(
        S2_nag - ((1 + mu) ** 2 + mu ** 4 / (1 - mu ** 2)))

    results = {}
    for name, step, S, S2 in (("heavy ball", _moments_heavy_ball, S_hb, S2_hb),
                              ("Nesterov", _moments_nesterov, S_nag, S2_nag)):
        Wst, D2st = _stationary(step, s, lam)
        # leading order in eta: W* = eta s S/(2 lam)
        lead_W = _lead(Wst, eta, 1)
        checks[f"{name}: stationary E[w_i^2] = eta s S/(2 lam) + O(eta^2)"] = _is_zero(lead_W - s * S / (2 * lam))
        lead_D = _lead(D2st, eta, 2)
        checks[f"{name}: stationary E[dw_i^2] = eta^2 s S2 + O(eta^3)"] = _is_zero(lead_D - s * S2)
        rate = _slow_rate(step, s, lam)
        c1 = _lead(rate.diff(W), eta, 1)
        c2 = _lead(rate.subs(W, 0).diff(s), eta, 2)
        checks[f"{name}: slow ODE dW/dk = -2 eta lam S W + eta^2 S^2 s"] = (
            _is_zero(c1 + 2 * lam * S) and _is_zero(c2 - S ** 2))
        # self-consistency d s = G/x, x = d W: x^2 = eta S G/(2 lam); angle^2 = d E[dw^2]/x
        xs2 = eta * S * G / (2 * lam)
        ang2 = sp.simplify(eta ** 2 * S2 * G / xs2)       # = eta^2 (d s) S2 / x with d s = G/x
        results[name] = (sp.simplify(S), sp.simplify(S2), xs2, sp.simplify(ang2), Wst)
    ang_hb = results["heavy ball"][3]
    checks["heavy ball: angle^2 = 2 eta lam/(1+mu)"] = _is_zero(ang_hb - 2 * eta * lam / (1 + mu))
    ang_nag = results["Nesterov"][3]
    checks["Nesterov: angle^2 = 2 eta lam (1+2mu-2mu^3)/(1+mu)"] = _is_zero(
        ang_nag - 2 * eta * lam * (1 + 2 * mu - 2 * mu ** 3) / (1 + mu))
    Wst_hb = results["heavy ball"][4]

    # AdamW: normalised noise n with unit variance per coordinate (||n||^2 = d), decoupled decay.
    Wst_aw, D2_aw = _stationary(_moments_adamw, 1, lam)
    checks["AdamW: stationary E[w_i^2] = eta/(2 lam) + O(eta^2)"] = _is_zero(_lead(Wst_aw, eta, 1) - 1 / (2 * lam))
    checks["AdamW: stationary E[dw_i^2] = eta^2 (1-b1)/(1+b1) + O(eta^3)"] = _is_zero(
        _lead(D2_aw, eta, 2) - (1 - b1) / (1 + b1))
    rate_aw = _slow_rate(_moments_adamw, sp.Symbol("n2", positive=True), lam)
    n2 = sp.Symbol("n2", positive=True)
    checks["AdamW: slow ODE dW/dk = -2 eta lam W + eta^2 n2"] = (
        _is_zero(_lead(rate_aw.diff(W), eta, 1) + 2 * lam) and _is_zero(_lead(rate_aw.subs(W, 0).diff(n2), eta, 2) - 1))
    xs_aw = eta * d / (2 * lam)
    ang2_aw = sp.simplify(eta ** 2 * d * (1 - b1) / (1 + b1) / xs_aw)
    checks["AdamW: angle^2 = 2 eta lam (1-b1)/(1+b1)"] = _is_zero(ang2_aw - 2 * eta * lam * (1 - b1) / (1 + b1))

    out.append(rf"""
## 2. Momentum and Adam: linear filters of uncorrelated gradients

Every optimiser here moves $w$ by a linear filter of past gradients, $\Delta w_k = -\eta\sum_j c_j h_{{k-j}}$
(plus decoupled decay), $h = g + \lambda_c w$. Write $S=\sum_j c_j$ (total displacement per gradient) and
$S_2=\sum_j c_j^2$ (random-walk displacement):

| optimiser | $c_0$ | $c_j$, $j\ge1$ | $S$ | $S_2$ |
|---|---|---|---|---|
| heavy ball $M'=\mu M+h$, $w'=w-\eta M'$ | 1 | $\mu^j$ | ${sp.latex(S_hb)}$ | ${sp.latex(S2_hb)}$ |
| Nesterov (optax) $w'=w-\eta(h+\mu M')$ | $1+\mu$ | $\mu^{{j+1}}$ | ${sp.latex(S_nag)}$ | ${sp.latex(sp.factor(S2_nag))}$ |
| Adam (bias-corrected, steady state) | $1-\beta_1$ | $(1-\beta_1)\beta_1^j$ | ${sp.latex(S_ad)}$ | ${sp.latex(S2_ad)}$ |

**Assumption A1 (uncorrelated gradients).** The fresh gradient $g_k$ is uncorrelated with the buffer
(noise-dominated minibatch gradients: a random walk on the sphere). Then the second moments of the
coordinates obey the same linear recursion as a linear model driven by isotropic noise of variance $s$ per
coordinate, with the self-consistency $d\,s = \|g\|^2 = G/x$. Per coordinate, $W=E[w_i^2]$, $C=E[w_iM_i]$,
$V=E[M_i^2]$ (buffer before the step).

**Stationary moments** (discrete Lyapunov equation, exact in $\eta\lambda$; heavy ball shown):
$$W_* = {sp.latex(sp.factor(Wst_hb))} = \frac{{\eta s S}}{{2\lambda}} + O(\eta^2).$$
With $x = dW$ and $ds = G/x$: $x_*^2 = \eta S G/(2\lambda)$, i.e. $\|w\|^4 = \dfrac{{\eta G}}{{2\lambda(1-\mu)}}$ for
both momentum variants. The step has $E\|\Delta w\|^2 = \eta^2 S_2\, G/x$, so the angular update
$\theta^2 = E\|\Delta w\|^2/x = 2\eta\lambda S_2/S$:

* heavy ball: $\theta_*^2 = {sp.latex(ang_hb)}$;
* Nesterov: $\theta_*^2 = {sp.latex(sp.factor(ang_nag))}$ (larger: its first tap $1+\mu$ is not averaged);
* effective learning rate $\eta/x_* = \sqrt{{2\eta\lambda/(S G)}}$ (the long-run step per unit gradient is $S$ times it).

**Slow ODE** (solve $C$, $V$ at fixed $W$ -- they relax in $\sim 1/(1-\mu)$ steps -- and expand):
$$\frac{{dW}}{{dk}} = -2\eta\lambda S\,W + \eta^2 S^2 s + O(\eta^2\lambda^2 W, \eta^3),$$
so $\dot x = -2\eta\lambda S x + \eta^2 S^2 G/x$ and $u=x^2$ relaxes at rate $4\eta\lambda S = 4\eta\lambda/(1-\mu)$
(valid for $\eta\lambda \ll (1-\mu)^2$, so the buffer is fast).

**AdamW.** $w' = (1-\eta\lambda)w - \eta\,\hat m/\sqrt{{\hat v}}$. Update-norm model: with $v_i$ tracking
$E g_i^2$ the normalised gradient $n = g/\sqrt v$ has $E n_i^2 = 1$, $\|n\|^2 = d$, independent of $\|w\|$
(scale invariance makes $g\propto 1/\|w\|$ and $\sqrt v \propto 1/\|w\|$). The same Lyapunov computation with
unit noise gives $E[w_i^2] = \eta/(2\lambda) + O(\eta^2)$, $E[\Delta w_i^2] = \eta^2(1-\beta_1)/(1+\beta_1)$, hence
$$x_* = \frac{{\eta d}}{{2\lambda}},\qquad \theta_*^2 = {sp.latex(ang2_aw)},\qquad \dot x = -2\eta\lambda x + \eta^2 d,$$
$x$ (not $x^2$) relaxes at rate $2\eta\lambda$: $x(k) = x_* + (x_0-x_*)e^{{-2\eta\lambda k}}$. The equilibrium
angle does not depend on $G$; the norm does not depend on $G$ either.
""")
    return "".join(out)


# --------------------------------------------------------------------------------------------------
# 3. Adam with coupled L2
# --------------------------------------------------------------------------------------------------
def adam_l2_section(checks: dict) -> str:
    kap = sp.Symbol("kappa", positive=True)
    # Adam + L2: the L2 gradient lam w is normalised too: decay per step eta*kappa*lam, kappa = 1/sqrt(v_i).
    # Noise-dominated v: v_i = (G/x)/d, kappa = sqrt(d x / G).
    Wst, D2 = _stationary(_moments_adamw, 1, kap * lam)  # same linear structure as AdamW with lam -> kappa lam
    checks["Adam+L2: stationary E[w_i^2] = eta/(2 kappa lam) + O(eta^2)"] = _is_zero(
        _lead(Wst, eta, 1) - 1 / (2 * kap * lam))
    kappa_x = sp.sqrt(d * x / G)
    dxdk = -2 * eta * lam * kappa_x * x + eta ** 2 * d
    xstar = (eta * sp.sqrt(d * G) / (2 * lam)) ** sp.Rational(2, 3)
    checks["Adam+L2: x*^(3/2) = eta sqrt(d G)/(2 lam)"] = _is_zero(sp.simplify(dxdk.subs(x, xstar)))
    ang2 = sp.simplify(eta ** 2 * d * (1 - b1) / (1 + b1) / xstar)
    ang = sp.sqrt(ang2)
    # scaling exponents of the angle
    expo = {v: sp.simplify(sp.diff(sp.log(ang), v) * v) for v in (eta, lam, d, G)}
    checks["Adam+L2: angle ~ eta^(2/3) lam^(1/3) d^(1/3) G^(-1/6)"] = (
        expo[eta] == sp.Rational(2, 3) and expo[lam] == sp.Rational(1, 3) and expo[d] == sp.Rational(1, 3)
        and expo[G] == -sp.Rational(1, 6))
    rate = sp.simplify(-sp.diff(dxdk, x).subs(x, xstar))
    checks["Adam+L2: linearised relaxation rate = 3 eta^2 d/(2 x*)"] = _is_zero(rate - 3 * eta ** 2 * d / (2 * xstar))
    sv = sp.Symbol("s", positive=True)
    F = -sp.log(1 - sv) / 3 + sp.log(1 + sv + sv ** 2) / 6 - sp.atan((2 * sv + 1) / sp.sqrt(3)) / sp.sqrt(3)
    checks["Adam+L2: dF/ds = s/(1 - s^3)"] = _is_zero(sp.diff(F, sv) - sv / (1 - sv ** 3))
    # trajectory: x = x* s^2, dx/dk = A (1 - s^3) with A = eta^2 d
    A = eta ** 2 * d
    lhs = sp.simplify(dxdk.subs(x, xstar * sv ** 2) - A * (1 - sv ** 3))
    checks["Adam+L2: dx/dk = eta^2 d (1 - s^3), s = sqrt(x/x*)"] = _is_zero(lhs)
    eff = sp.simplify(eta * kappa_x.subs(x, xstar) / xstar)
    checks["Adam+L2: effective lr = eta sqrt(d/(G x*)) ~ eta/||w||"] = _is_zero(
        eff - eta * sp.sqrt(d / (G * xstar)))
    # comparison: relaxation time in units of 1/(eta lam): depends on d, G, eta (not only eta lam)
    tau = sp.simplify(1 / rate)
    return rf"""
## 3. Adam with coupled L2 ("normalisation only partially removed")

Adam normalises the *total* gradient $h = g + \lambda w$ by $\sqrt{{v}}$, and for a scale-invariant group
$\sqrt{{v}}\propto\|g\|\propto 1/\|w\|$: the preconditioner $\kappa = 1/\sqrt{{v_i}} = \sqrt{{d x/G}}$ (noise-dominated
$v$, isotropic model $v_i = E\|h\|^2/d$, $\lambda^2x^2 \ll G$). The normalised noise keeps $\|n\|^2 = d$, but the
L2 term becomes a decay of $\eta\kappa\lambda$ per step **that grows with the norm**. The Lyapunov computation is
AdamW's with $\lambda\to\kappa\lambda$: $E[w_i^2] = \eta/(2\kappa\lambda) + O(\eta^2)$, so

$$\dot x = -2\eta\lambda\sqrt{{\frac{{d}}{{G}}}}\,x^{{3/2}} + \eta^2 d,\qquad
x_*^{{3/2}} = \frac{{\eta\sqrt{{dG}}}}{{2\lambda}},\qquad x_* = {sp.latex(xstar)}.$$

* Angle: $\theta_*^2 = \eta^2 d S_2/x_*$, $\theta_* = {sp.latex(sp.simplify(ang))}$:
  $\theta_*\propto \eta^{{2/3}}\lambda^{{1/3}} d^{{1/3}} G^{{-1/6}}$ -- it depends on $G$ and $d$ and is not a function of
  $\eta\lambda$ alone (compare AdamW: $\sqrt{{2\eta\lambda(1-\beta_1)/(1+\beta_1)}}$).
* Effective learning rate $\eta\kappa/x = \eta\sqrt{{d/(G x)}}\propto \eta/\|w\|$ (not $\eta/\|w\|^2$ as for SGD): the
  angular step still depends on the norm, so the norm matters -- but less than for SGD.
* Trajectory: with $s=\sqrt{{x/x_*}}$, $\dot x = \eta^2 d\,(1-s^3)$, hence
  $F(s_k) - F(s_0) = \dfrac{{\eta^2 d}}{{2x_*}}k$ with
  $F(s) = \int \frac{{s\,ds}}{{1-s^3}} = {sp.latex(F)}$ (checked by differentiation). Linearised relaxation time
  $\tau = {sp.latex(tau)} = 2x_*/(3\eta^2 d)$ steps.
* Without L2 Adam's norm grows linearly, $x = x_0 + \eta^2 d\,k$ (both Adam variants), $\eta_{{\rm eff}}\sim k^{{-1/2}}$.
"""


def normalised_section(checks: dict) -> str:
    """Lion and Muon: normalised updates with a fixed norm F (widelimit.dynamics.norms_update)."""
    j, i, l = sp.symbols("j i l", integer=True, positive=True)
    b2, bm, q, a0, A, F, D, e, beta = sp.symbols("beta_2 b q a_0 A F D e beta", positive=True)
    t2, tm = sp.symbols("t_2 t_b", positive=True)   # b2 = exp(-t2), b = exp(-tm): known to lie in (0, 1)

    Nn = sp.Symbol("N", integer=True, positive=True)

    def S(expr, var=j):   # sum_{var=1..N}, N -> oo, with the ratios written as exp(-t); back in b2, b
        r = sp.summation(sp.expand(expr.subs({b2: sp.exp(-t2), bm: sp.exp(-tm)})), (var, 1, Nn))
        return sp.simplify(sp.limit(r, Nn, sp.oo).subs({t2: -sp.log(b2), tm: -sp.log(bm)}))
    lion = (1 - b1, b1 * (1 - b2) * b2 ** (j - 1))
    muon = (1 - bm ** 2, (1 - bm) * bm ** (j + 1))
    S2_lion = (1 - b1) ** 2 + b1 ** 2 * (1 - b2) / (1 + b2)
    S2_muon = (1 - bm ** 2) ** 2 + (1 - bm) ** 2 * bm ** 4 / (1 - bm ** 2)
    for name, (c0, cj), S2 in (("lion", lion, S2_lion), ("muon (nesterov)", muon, S2_muon)):
        checks[f"{name}: sum_j a_j = 1"] = _is_zero(c0 + S(cj) - 1)
        checks[f"{name}: S2 = sum_j a_j^2 closed form"] = _is_zero(c0 ** 2 + S(cj ** 2) - S2)
    # geometric tail a_j = A q^(j-1): lag-i covariance, and 1 + 2 sum_i rho_i = (sum a)^2/S2
    tail = A * q ** (j - 1)
    cov_i = sp.simplify(A * q ** (i - 1) * a0 + sp.summation(A * q ** (i + l - 1) * A * q ** (l - 1), (l, 1, sp.oo)))
    closed = A * q ** (i - 1) * (a0 + A * q / (1 - q ** 2))
    checks["geometric tail: Cov(c_k, c_{k-i}) = A q^(i-1) (a0 + A q/(1-q^2))"] = _is_zero(
        sp.simplify(cov_i.rewrite(sp.Piecewise).args[0][0] if isinstance(cov_i, sp.Piecewise) else cov_i) - closed)
    S2g = a0 ** 2 + A ** 2 / (1 - q ** 2)
    tot = sp.simplify(S2g + 2 * sp.summation(closed, (i, 1, sp.oo)).rewrite(sp.Piecewise))
    tot = tot.args[0][0] if isinstance(tot, sp.Piecewise) else tot
    checks["geometric tail: sum over all lags of Cov = (a0 + A/(1-q))^2"] = _is_zero(tot - (a0 + A / (1 - q)) ** 2)
    lion_rho1 = b1 * (b1 * b2 * (1 - b2) / (1 + b2) + (1 - b1) * (1 - b2))
    checks["lion: Cov lag 1 = b1 (b1 b2 (1-b2)/(1+b2) + (1-b1)(1-b2))"] = _is_zero(
        closed.subs({i: 1, a0: 1 - b1, A: b1 * (1 - b2), q: b2}) - lion_rho1)
    # the noise map and its fixed point
    xm = (1 - e) ** 2 * x + eta ** 2 * F * D
    xs = eta * F * D / (lam * (2 - eta * lam))
    checks["noise map: x* = eta F D/(lam (2 - eta lam)) (e = eta lam)"] = _is_zero(xm.subs(e, eta * lam).subs(x, xs) - xs)
    ang2 = sp.simplify(eta ** 2 * F / xs)
    checks["noise map: angle^2 = eta^2 F/x* = eta lam (2 - eta lam)/D"] = _is_zero(ang2 - eta * lam * (2 - eta * lam) / D)
    # published Lion formula = linearised arcsin law: R_j ~ (2/pi) rho_j, sum_all rho = 1/S2, eta lam -> 0
    D_lin = sp.Rational(2) / sp.pi / S2_lion
    pub = sp.sqrt(sp.pi / 2) * sp.sqrt(2 * eta * lam) * sp.sqrt(S2_lion)
    checks["lion: sqrt(2 eta lam/D_lin) = published sqrt(pi/2) sqrt(2 eta lam) sqrt(S2)"] = _is_zero(
        sp.sqrt(2 * eta * lam / D_lin) - pub)
    checks["lion: arcsin(1) (2/pi) = 1 (R_0 = ||u||^2/F)"] = sp.simplify(2 / sp.pi * sp.asin(1) - 1) == 0
    # relaxation with the growth term: z^2 - ((1-e)^2 + beta) z + beta = 0, larger root 1 - 2e/(1-beta) + O(e^2)
    z = sp.Symbol("z")
    roots = sp.solve(z ** 2 - ((1 - e) ** 2 + beta) * z + beta, z)
    z1 = [r for r in roots if sp.simplify(r.subs({beta: sp.Rational(1, 3), e: 0})) == 1][0]
    checks["relaxation: 1 - z1 = 2 e/(1 - beta) + O(e^2) (beta = 1/3, 1/5, 1/10)"] = all(
        _is_zero(sp.diff(1 - z1, e).subs(e, 0).subs(beta, bv) - 2 / (1 - bv))
        for bv in (sp.Rational(1, 3), sp.Rational(1, 5), sp.Rational(1, 10)))
    # Adam with coupled L2 per coordinate: 2 eta lam sqrt(x) w_i^2/s_i = eta^2 -> w_i^2 = eta s_i/(2 lam sqrt x)
    si, wi2 = sp.symbols("s_i w_i2", positive=True)
    wsol = sp.solve(sp.Eq(2 * eta * lam * sp.sqrt(x) * wi2 / si, eta ** 2), wi2)[0]
    checks["adam per coordinate: w_i^2 = eta s_i/(2 lam sqrt x)"] = _is_zero(wsol - eta * si / (2 * lam * sp.sqrt(x)))
    xiso = (eta * sp.sqrt(d * G) / (2 * lam)) ** sp.Rational(2, 3)
    checks["adam per coordinate: equal s_i = sqrt(G/d) gives the isotropic x*"] = _is_zero(
        sp.simplify(d * wsol.subs({si: sp.sqrt(G / d), x: xiso}) - xiso))
    return rf"""
## Lion and Muon: normalised updates

Both update with $u_k = N(c_k)$, $c_k = \sum_j a_j g_{{k-j}}$ (steady state), and decoupled decay
$w_{{k+1}} = (1-\eta\lambda)w_k - \eta u_k$; $\|u\|^2 = F$ is fixed ($F=d$ for ${{\rm sign}}$; Muon: Newton--Schulz).
Lion: $a_0 = 1-\beta_1$, $a_j = \beta_1(1-\beta_2)\beta_2^{{j-1}}$; Muon (Nesterov): $a_0 = 1-b^2$, $a_j=(1-b)b^{{j+1}}$;
$\sum_j a_j = 1$ and $S_2 = \sum_j a_j^2$ = ${sp.latex(S2_lion)}$ (Lion), ${sp.latex(sp.factor(S2_muon))}$ (Muon).

* Noise map: $x_{{k+1}} = (1-\eta\lambda)^2 x_k + \eta^2 F D$ with the coherence
  $D = 1 + 2\sum_{{j\ge1}}(1-\eta\lambda)^j R(\rho_j)$; $x_* = \eta F D/(\lambda(2-\eta\lambda))$, RMS angle
  $\sqrt{{\eta\lambda(2-\eta\lambda)/D}}$.
* Geometric tail $a_j = Aq^{{j-1}}$: ${{\rm Cov}}(c_k, c_{{k-i}}) = Aq^{{i-1}}(a_0 + Aq/(1-q^2))$, and the lags sum to
  $(\sum_j a_j)^2$, so $1 + 2\sum_{{i\ge1}}\rho_i = 1/S_2$.
* Lion: $R(\rho) = (2/\pi)\arcsin\rho$ (sign of Gaussians). Linearised ($R\approx(2/\pi)\rho$ for $j\ge1$, $S_2\ll1$,
  $\eta\lambda\to0$): $D\approx 2/(\pi S_2)$ and the angle is the published
  $\sqrt{{\pi/2}}\sqrt{{2\eta\lambda}}\sqrt{{(1-\beta_1)^2+\beta_1^2(1-\beta_2)/(1+\beta_2)}}$.
* Growth: while $\ln x$ changes at rate $r$ the tail is stretched, $q\to q e^{{r/2}}$, and $D\to D + D'r$; a
  deviation then obeys $\delta_{{k+1}} = (1-\eta\lambda)^2\delta_k + \beta(\delta_k-\delta_{{k-1}})$,
  $\beta = \eta\lambda(2-\eta\lambda)D'/D$, whose slow root gives $\tau = (1-\beta)/(2\eta\lambda) + O(1)$ steps.

## Adam with coupled L2, per coordinate

Coordinate $i$ with unit-norm gradient RMS $s_i$ (so $v_i = s_i^2/x$) decays at $2\eta\lambda\sqrt{{x}}/s_i$ against the
source $\eta^2$: $w_i^2 = \eta s_i/(2\lambda\sqrt{{x}})$, $x_*^{{3/2}} = \eta\sum_i s_i/(2\lambda)$; equal $s_i=\sqrt{{G/d}}$ gives
back the isotropic $x_*$, otherwise the isotropic model over-predicts the norm by $a^{{2/3}}$,
$a = \sqrt{{d\sum s_i^2}}/\sum s_i\ge1$.
"""


def assumptions_section() -> str:
    return r"""
## 0. Setting and assumptions

* $w\in\mathbb R^d$ is scale-invariant: $\ell(cw)=\ell(w)$ for $c>0$, hence $w\cdot\nabla\ell = 0$ and
  $\nabla\ell(cw) = \nabla\ell(w)/c$; $G = \|\nabla\ell(\hat w)\|^2$ is the squared gradient norm at unit scale.
* L2 convention: penalty $(\lambda/2)\|w\|^2$; SGD $w\leftarrow w-\eta(\nabla\ell+\lambda w)$; AdamW
  $w\leftarrow(1-\eta\lambda)w-\eta\,\hat m/(\sqrt{\hat v}+\epsilon)$; optax's momentum/Nesterov/Adam conventions.
* A1: gradients uncorrelated with the optimiser's buffers (noise-dominated; exact for plain SGD, which needs
  no assumption). A persistent (signal) gradient gives the same norm balance but a larger angular step
  ($S^2$ instead of $S_2$ per step).
* Leading order in $\eta\lambda$ for the closed forms and the ODE; momentum needs $\eta\lambda\ll(1-\mu)^2$.
* Adam: $\epsilon\to0$; $v$ in equilibrium and isotropic within the group, $v_i = E\|h\|^2/d$.
* Angular update $\theta$: the angle between $w_k$ and $w_{k+1}$; the laws give $E[\theta^2] = E\|\Delta w\|^2/x$,
  i.e. the root-mean-square angle per step.
* Relaxation time: e-folding time, in steps, of a small deviation from equilibrium under the slow ODE (the
  same for every power of $x$).
"""


def main(out_path: str | Path = Path(__file__).with_suffix(".md")) -> dict:
    """Run all derivations, write the Markdown report to ``out_path`` and return ``{check: bool}``."""
    checks: dict = {}
    parts = ["# Scale-invariant weight norms: equilibria and relaxation laws\n\n",
             f"Generated by `derivations/scale_invariant.py` (sympy {sp.__version__}); every statement below "
             "is checked there.\n",
             assumptions_section(), sgd_section(checks), momentum_section(checks), adam_l2_section(checks),
             normalised_section(checks)]
    table = "\n## Checks\n\n| check | result |\n|---|---|\n" + "".join(
        f"| {name} | {'ok' if ok else 'FAILED'} |\n" for name, ok in checks.items())
    Path(out_path).write_text("".join(parts) + table)
    return checks


if __name__ == "__main__":
    res = main(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_suffix(".md"))
    bad = [k for k, v in res.items() if not v]
    print(f"{len(res) - len(bad)}/{len(res)} checks passed" + (f"; FAILED: {bad}" if bad else ""))
    sys.exit(1 if bad else 0)
