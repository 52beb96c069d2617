"""Stage 1: the acquisition prepared for analysis (``stage.py``): timing and the uniform time
grid (``timing.py``, ``grid.py``), head motion (``motion.py``, before the stages), masks
(``masks.py``), curve features and image noise (``features.py``)."""
