"""EM samples kept for registration: one per grid cell, in the order collected.

A catheter held still streams readings that differ only by sensor noise; kept as they come,
such a dwell would outweigh the rest of the sweep in every fit. :class:`EMSampleAccumulator`
keeps the first sample in each cube of a grid of size ``cell_m`` (patient frame) and drops the
rest, streaming (a node adds readings as they arrive) or in bulk (:meth:`thin` over a recorded
sweep). Cells of a grid of size ``k * cell_m`` (integer ``k``) nest the cells of this one, so
samples already thinned at a coarser multiple pass a finer thinning unchanged.
"""

from __future__ import annotations

import numpy as np


class EMSampleAccumulator:
    """EM sensor positions and axes kept one per grid cell (patient frame, m).

    Parameters
    ----------
    cell_m : float
        Size (m) of the grid's cubes; 0 keeps every sample.
    max_samples : int or None
        Keep at most this many samples: adding more drops the oldest (and frees its cell).

    Examples
    --------
    >>> acc = EMSampleAccumulator(cell_m=0.003)
    >>> [acc.add([0.0001, 0, 0]), acc.add([0.0012, 0.001, 0]), acc.add([0.0041, 0, 0])]
    [True, False, True]
    >>> acc.positions.tolist()
    [[0.0001, 0.0, 0.0], [0.0041, 0.0, 0.0]]
    """

    def __init__(self, cell_m: float, max_samples: int | None = None) -> None:
        if not cell_m >= 0:
            raise ValueError(f"the sample cell must be >= 0 m, got {cell_m}")
        if max_samples is not None and max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        self.cell_m = float(cell_m)
        self.max_samples = max_samples
        self._cells: dict = {}
        """Cell of each kept sample → None, oldest first (a dict keeps insertion order)."""
        self._positions: list[np.ndarray] = []
        self._directions: list[np.ndarray | None] = []
        self._serial = 0

    def _cell(self, p: np.ndarray):
        if self.cell_m == 0:
            self._serial += 1
            return self._serial
        return tuple(np.floor(p / self.cell_m).astype(np.int64))

    def add(self, p_patient, direction_patient=None) -> bool:
        """Add one sample (position (3,) m, optional unit axis (3,)); whether it was kept."""
        p = np.asarray(p_patient, dtype=float).reshape(3)
        cell = self._cell(p)
        if cell in self._cells:
            return False
        self._cells[cell] = None
        self._positions.append(p)
        self._directions.append(None if direction_patient is None
                                else np.asarray(direction_patient, dtype=float).reshape(3))
        if self.max_samples is not None and len(self._positions) > self.max_samples:
            del self._positions[0], self._directions[0]
            del self._cells[next(iter(self._cells))]
        return True

    def clear(self) -> int:
        """Drop every sample; the number dropped."""
        n = len(self._positions)
        self._cells.clear()
        self._positions.clear()
        self._directions.clear()
        return n

    def __len__(self) -> int:
        return len(self._positions)

    @property
    def positions(self) -> np.ndarray:
        """Kept positions (N, 3), oldest first (patient frame, m)."""
        return np.array(self._positions, dtype=float).reshape(-1, 3)

    @property
    def directions(self) -> np.ndarray | None:
        """Kept unit axes (N, 3), or ``None`` when a kept sample came without one."""
        if any(d is None for d in self._directions):
            return None
        return np.array(self._directions, dtype=float).reshape(-1, 3)

    @staticmethod
    def thin(points: np.ndarray, cell_m: float) -> np.ndarray:
        """Indices (ascending) of the samples of a recorded sweep (N, 3; m) that an accumulator
        of cell ``cell_m`` (m) would keep, added in order: the first in each cell; all when
        ``cell_m`` is 0."""
        points = np.asarray(points, dtype=float)
        if cell_m <= 0:
            return np.arange(len(points))
        _, first = np.unique(np.floor(points / cell_m).astype(np.int64), axis=0,
                             return_index=True)
        return np.sort(first)
