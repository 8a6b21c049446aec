"""Bending of a section by an offset tendon: ``κ = τ r / EI``.

A straight tendon pulled with tension τ (N) at offset r (m) from the neutral axis bends a section
of bending stiffness EI (N·m²) to a constant curvature κ = τ r / EI (1/m) (small-extension
limit: the axial shortening by τ / EA is neglected).

Examples
--------
>>> round(tendon_curvature(2.0, 1e-3, 2.5e-4), 12)        # 2 N at 1 mm on 2.5e-4 N·m²
8.0
>>> round(tendon_tension(8.0, 1e-3, 2.5e-4), 12)
2.0
"""

from __future__ import annotations


def tendon_curvature(tension: float, offset: float, EI: float) -> float:
    """Curvature κ (1/m) of a section of stiffness ``EI`` (N·m²) under ``tension`` (N) at
    ``offset`` (m)."""
    return tension * offset / EI


def tendon_tension(curvature: float, offset: float, EI: float) -> float:
    """Tension (N) at ``offset`` (m) that bends a section of stiffness ``EI`` (N·m²) to
    ``curvature`` (1/m): the inverse of :func:`tendon_curvature`."""
    return curvature * EI / offset
