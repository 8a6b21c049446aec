"""Catheter models walked into hand-built trees, shared by the catheter and navigation tests."""

import numpy as np

from bronchonav.catheter import CatheterCommand, CatheterModel, CatheterParams
from trees import y_tree


def insert_and_bend(model, tendon, final=0.14, max_tension=6.0, max_failed=0):
    """Insert in 1 mm steps; from 70 mm on, pull one tendon progressively. Every step must
    converge (a failed step keeps the previous state and could hide a solver fault), except up
    to ``max_failed`` steps beyond the carina (100 mm) where a test says why. Returns the
    model's state (its last converged one)."""
    failed = []
    for q in np.arange(0.005, final + 1e-9, 0.001):
        tension = np.zeros(4)
        if q > 0.07:
            tension[tendon] = min(max_tension, (q - 0.07) * 300.0)
        if not model.step(CatheterCommand(insertion=q, tendon_tension=tension)).converged:
            failed.append(round(float(q), 4))
    assert len(failed) <= max_failed and all(q > 0.1 for q in failed), \
        f"solver steps failed at insertions {failed} m"
    return model.state



def catheters_in_both_children(n_nodes=(40, 30)):
    """Two models of the same catheter holding the same command (140 mm in, tendons slack) in
    the Y tree: one walked into the left child (tendon 0 pulled on the way), one into the right
    (tendon 2): the walls keep each where its history put it."""
    tree = y_tree()
    models = []
    for tendon, n in zip((0, 2), n_nodes):
        model = CatheterModel(CatheterParams.default(), tree=tree, n_nodes=n)
        insert_and_bend(model, tendon)
        for t in np.linspace(5.0, 0.0, 6):  # let go of the tendon
            tension = np.zeros(4)
            tension[tendon] = t
            assert model.step(CatheterCommand(insertion=0.14, tendon_tension=tension)).converged
        models.append(model)
    return models, CatheterCommand(insertion=0.14, tendon_tension=[0.0] * 4)
