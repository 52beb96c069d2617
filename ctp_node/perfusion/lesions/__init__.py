"""Stage 6: the normal reference, the core and Tmax masks and their volumes (``stage.py``,
``stroke.py``)."""
