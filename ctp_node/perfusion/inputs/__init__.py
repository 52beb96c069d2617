"""Stage 3: the arterial and venous inputs (``stage.py``): automatic selection, the venous
partial-volume scale and the arterial model (``selection.py``), the measured curves
(``curves.py``)."""
