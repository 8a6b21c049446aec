"""Airway trees: the data model, segmentation of a CT, centerlines and quality metrics."""

from bronchonav.airway.tree import LOBES, AirwayTree, Branch, CenterlineSamples, Nodule

__all__ = ["LOBES", "AirwayTree", "Branch", "CenterlineSamples", "Nodule"]
