"""Permeability of the blood-brain barrier (issue 34): pure functions on curves
(``patlak.py``), not yet a stage of the engine and imported by none of it."""
