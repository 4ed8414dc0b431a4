"""Sampling and survival functions for :class:`~iiotsim.sim.scenario.Distribution`
(mean + shape, converted here to numpy/scipy parameters)."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy import special

from .scenario import Distribution


def sample(
    dist: Distribution, rng: np.random.Generator, size: int | tuple[int, ...]
) -> NDArray[np.float64]:
    """Draws (seconds)."""
    if dist.kind == "exponential":
        return rng.exponential(dist.mean, size)
    if dist.kind == "fixed":
        return np.full(size, dist.mean, dtype=np.float64)
    if dist.kind == "weibull":
        scale = dist.mean / math.gamma(1 + 1 / dist.shape)
        return scale * rng.weibull(dist.shape, size)
    if dist.kind == "lognormal":
        sigma = dist.shape
        mu = math.log(dist.mean) - sigma * sigma / 2
        return rng.lognormal(mu, sigma, size)
    values = np.asarray(dist.sample, dtype=np.float64)
    return rng.choice(values, size)


def length_biased(dist: Distribution, rng: np.random.Generator, size: int) -> NDArray[np.float64]:
    """Draws of the period that holds a random time (density x f(x) / mean): a long
    period is more likely to be the one running. Exact for every kind: exponential ->
    Gamma(2); Weibull(k) -> scale * Gamma(1 + 1/k)^(1/k); lognormal -> mu + sigma^2;
    fixed -> itself; empirical -> resampled with weight = duration."""
    if dist.kind == "exponential":
        return rng.gamma(2.0, dist.mean, size)
    if dist.kind == "fixed":
        return np.full(size, dist.mean, dtype=np.float64)
    if dist.kind == "weibull":
        scale = dist.mean / math.gamma(1 + 1 / dist.shape)
        return np.asarray(scale * rng.gamma(1 + 1 / dist.shape, 1.0, size) ** (1 / dist.shape))
    if dist.kind == "lognormal":
        sigma = dist.shape
        mu = math.log(dist.mean) - sigma * sigma / 2
        return rng.lognormal(mu + sigma * sigma, sigma, size)
    values = np.asarray(dist.sample, dtype=np.float64)
    total = values.sum()
    if total <= 0:
        return np.zeros(size)
    return rng.choice(values, size, p=values / total)


def equilibrium(
    dist: Distribution, rng: np.random.Generator, size: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(elapsed, residual) of the period running at a random time of a stationary
    renewal process: a length-biased period split at a uniform point."""
    length = length_biased(dist, rng, size)
    split = rng.uniform(0.0, 1.0, size)
    return split * length, (1.0 - split) * length


def survival(dist: Distribution, x: NDArray[np.float64] | float) -> NDArray[np.float64]:
    """P(duration > x)."""
    x = np.asarray(x, dtype=np.float64)
    if dist.kind == "exponential":
        return np.exp(-x / dist.mean)
    if dist.kind == "fixed":
        return (dist.mean > x).astype(np.float64)
    if dist.kind == "weibull":
        scale = dist.mean / math.gamma(1 + 1 / dist.shape)
        return np.exp(-((np.maximum(x, 0) / scale) ** dist.shape))
    if dist.kind == "lognormal":
        sigma = dist.shape
        mu = math.log(dist.mean) - sigma * sigma / 2
        z = (np.log(np.maximum(x, 1e-300)) - mu) / (sigma * math.sqrt(2))
        return np.asarray(0.5 * special.erfc(z), dtype=np.float64)
    values = np.sort(np.asarray(dist.sample, dtype=np.float64))
    return 1.0 - np.searchsorted(values, x, side="right") / len(values)


def mean(dist: Distribution) -> float:
    if dist.kind == "empirical":
        return float(np.mean(dist.sample))
    return dist.mean
