"""Stage 4: the residue functions (``stage.py``): oSVD deconvolution (``deconvolution.py``) and
the model fit ``F · (AIF ⊗ R)(t − δ)`` (``parametric.py``, with its dictionary of model curves
``model_curves.py``, pools of like voxels ``pooling.py`` and MTT smoothing ``regularise.py``)."""
