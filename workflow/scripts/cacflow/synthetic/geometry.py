"""Solids of the phantom in patient coordinates (mm): capsules (3-D segments with a radius)
and ellipsoids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Capsules:
    """Segments p0 -> p1 with radius r; rendered as a union of 3-D capsules."""

    p0: np.ndarray
    p1: np.ndarray
    radius: np.ndarray

    @classmethod
    def from_polyline(cls, points: np.ndarray, radius: np.ndarray | float) -> Capsules:
        points = np.asarray(points, dtype=float)
        radius = np.broadcast_to(np.asarray(radius, dtype=float), (len(points),))
        return cls(points[:-1], points[1:], np.maximum(radius[:-1], radius[1:]))

    @classmethod
    def concat(cls, parts: list[Capsules]) -> Capsules:
        if not parts:
            return cls(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0))
        return cls(
            np.concatenate([p.p0 for p in parts]),
            np.concatenate([p.p1 for p in parts]),
            np.concatenate([p.radius for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.radius)


@dataclass(frozen=True)
class Ellipsoid:
    center: np.ndarray  # (3,)
    axes: np.ndarray  # (3, 3): rows are the unit directions
    semi_axes_mm: np.ndarray  # (3,)

    @property
    def quadric(self) -> np.ndarray:
        scaled = self.axes / self.semi_axes_mm[:, None]
        return scaled.T @ scaled

    def half_extent(self) -> np.ndarray:
        """Half the size of the axis-aligned bounding box."""
        return np.sqrt(np.sum((self.axes * self.semi_axes_mm[:, None]) ** 2, axis=0))

    def scaled(self, margin_mm: float) -> Ellipsoid:
        return Ellipsoid(self.center, self.axes, np.maximum(self.semi_axes_mm + margin_mm, 0.1))


def quadric_form(m: np.ndarray, dx, dy, dz: float):
    """(d^T M d) for offsets d = (dx, dy, dz) from an ellipsoid's centre: <= 1 inside."""
    return (
        m[0, 0] * dx * dx
        + 2 * m[0, 1] * dx * dy
        + m[1, 1] * dy * dy
        + 2 * (m[0, 2] * dx + m[1, 2] * dy) * dz
        + m[2, 2] * dz * dz
    )
