"""Stage 2: the tissue curves (``stage.py``): a temporal basis (``compress.py``), the
time-profile bilateral filter (``denoise.py``), the compressed, denoised profiles of the whole
parenchyma (``profiles.py``)."""
