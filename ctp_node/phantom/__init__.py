"""The digital CT perfusion phantom with its truth, and a writer of any acquisition as DICOM CT.

``generator.py``: :func:`make_phantom` (numpy and scipy), with its head in ``anatomy.py``.
``families.py``: :func:`~ctp_node.phantom.families.make_family_phantom`, phantoms made the way
other groups make theirs (Kudo's grid, plateau residues, sampled convolution; issue 33).
``dicom.py``: :func:`write_ct_series` (pydicom), imported on its own so that the generator does
not load pydicom.
"""

from ctp_node.phantom.generator import Phantom, PhantomSpec, PhantomTruth, make_phantom

__all__ = ["Phantom", "PhantomSpec", "PhantomTruth", "make_phantom"]
