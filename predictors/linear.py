"""Small linear fits shared by the predictors (no predictor imports this module's users).

:func:`ridge_loo` (ridge with the penalty chosen by exact leave-one-out error),
:class:`Ridge` (its result, saved as arrays), :func:`nnls_fit`
(non-negative least squares) and :func:`inverse_error_shares` (weights of candidates by
their validation error).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from costmodels.errors import ModelFileError

ALPHAS = tuple(10.0 ** p for p in range(-3, 5))


@dataclass(frozen=True)
class Ridge:
    """``y = ((x - mean) / scale) @ coef + intercept``."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    alpha: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}mean": self.mean, f"{prefix}scale": self.scale,
                f"{prefix}coef": self.coef,
                f"{prefix}intercept_alpha": np.array([self.intercept, self.alpha])}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], prefix: str, where: object = "arrays.npz"
                    ) -> Ridge:
        """The ridge saved by :meth:`arrays` (``where``: the file, for messages); arrays of
        other shapes are refused by name."""
        names = [f"{prefix}{k}" for k in ("mean", "scale", "coef", "intercept_alpha")]
        missing = [n for n in names if n not in a]
        if missing:
            raise ModelFileError(f"{where} lacks {', '.join(missing)}; fit the model again")
        mean, scale, coef, ia = (a[n] for n in names)
        if not (mean.ndim == scale.ndim == coef.ndim == ia.ndim == 1
                and len(mean) == len(scale) == len(coef) and len(ia) == 2):
            raise ModelFileError(f"{where}: arrays {', '.join(names)} do not have the shapes of "
                                 "one ridge (three of one length, and two numbers); the file "
                                 "was edited: fit the model again")
        return cls(mean, scale, coef, float(ia[0]), float(ia[1]))


def ridge_loo(x: np.ndarray, y: np.ndarray, alphas: Sequence[float] = ALPHAS) -> Ridge:
    """Ridge on standardised columns, alpha chosen by exact leave-one-out error.

    ``x``: (n, d), ``y``: (n,). Constant columns get zero weight; works for n >= 1.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mean = x.mean(axis=0)
    sd = x.std(axis=0)
    scale = np.where(sd > 1e-12, sd, np.inf)
    z = (x - mean) / scale
    ym = float(y.mean())
    yc = y - ym
    n, d = z.shape
    best: tuple[float, float, np.ndarray] | None = None
    for a in alphas:
        g = z.T @ z + a * np.eye(d)
        coef = np.linalg.solve(g, z.T @ yc)
        if n > 2:
            hat = np.einsum("ij,ji->i", z, np.linalg.solve(g, z.T)) + 1.0 / n
            err = float(np.mean(((yc - z @ coef) / np.maximum(1.0 - hat, 1e-6)) ** 2))
        else:
            err = -a  # too few points to validate: the strongest penalty
        if best is None or err < best[0] - 1e-12:
            best = (err, a, coef)
    assert best is not None
    return Ridge(mean, np.where(np.isfinite(scale), scale, 1.0), np.where(
        np.isfinite(scale), best[2], 0.0), ym, best[1])


def nnls_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least-squares weights ``w`` (d,) with ``x @ w ~ y``."""
    w, _ = nnls(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64),
                maxiter=max(50 * x.shape[1], 100))
    return w


def inverse_error_shares(err: np.ndarray, power: float) -> np.ndarray:
    """Shares summing to 1, proportional to ``1 / err ** power`` (``err``: finite,
    non-negative errors of the candidates); an error of 0 (an exact fit) is read as
    1e-12 of the largest, so the shares stay finite."""
    err = np.maximum(np.asarray(err, dtype=np.float64),
                     1e-12 * max(float(np.max(err)), 1e-300))
    inv = (err / float(np.min(err))) ** -float(power)
    return inv / inv.sum()


def loo_residuals(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Exact leave-one-out residuals of the least-squares fit ``y ~ z``."""
    h = z @ np.linalg.pinv(z)
    return (y - h @ y) / np.maximum(1.0 - np.diag(h), 1e-6)
