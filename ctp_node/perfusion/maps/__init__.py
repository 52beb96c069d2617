"""Stage 5: the maps and the tissue mask from the residue functions (``stage.py``)."""
