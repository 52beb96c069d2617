"""Spatial regularisation of the fitted model (:mod:`ctp_node.perfusion.residues.parametric`): the
parameters a faint curve leaves undetermined borrow from the neighbours that pin them down."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage

from ctp_node.perfusion.residues.model_curves import fine_axes
from ctp_node.perfusion.residues.parametric import ModelFit


def smooth_mtt(
    fitted: ModelFit, mask: np.ndarray, sigma_voxels: float, lenders: np.ndarray | None = None
) -> ModelFit:
    """``fitted`` (voxels of ``mask`` ``(z, y, x)``) with its MTT replaced by an in-plane
    Gaussian average (σ ``sigma_voxels``) of log MTT, each voxel weighed by the square of its
    volume F · MTT; the volume is kept, the flow becomes volume / MTT.

    MTT is the ratio of two noisy quantities and the least determined of the model's
    parameters: a faint curve's MTT trades off against its flow (a shorter MTT with a higher
    flow fits nearly as well), so flow errors are mostly MTT errors, in both directions. The
    volume (the curve's area) is well determined. MTT varies slowly across tissue; averaged
    over neighbours, weighed by how much signal each has (a curve's precision grows with the
    square of its height), the faint voxel's MTT borrows strength from those that pin it
    down. Voxels without volume do not count; outside tissue nothing changes.

    Only ``lenders`` (per voxel of ``mask``; default all) lend their MTT: a large artery's
    curve fits a short MTT with a volume 30× the tissue's, and weighed by its volume² it set
    the MTT of the tissue around it (a 1.5 s MTT, CBF × 5, in grey matter of 8 s: issue 33)."""
    volume = fitted.flow * fitted.mtt_s
    shortest = fine_axes()[1][0]  # the shortest MTT a fit gives
    log_mtt = np.zeros(mask.shape, np.float32)
    weight = np.zeros(mask.shape, np.float32)
    log_mtt[mask] = np.log(np.maximum(fitted.mtt_s, shortest / 2))
    weight[mask] = np.square(np.maximum(volume, 0))
    if lenders is not None:
        weight[mask] *= lenders
    sigma = (0, sigma_voxels, sigma_voxels)
    numerator = ndimage.gaussian_filter(log_mtt * weight, sigma)[mask]
    denominator = ndimage.gaussian_filter(weight, sigma)[mask]
    mtt = np.where(
        denominator > 0, np.exp(numerator / np.maximum(denominator, 1e-30)), fitted.mtt_s
    )
    flow = np.where(fitted.flow > 0, volume / mtt, fitted.flow)
    return replace(fitted, flow=flow.astype(np.float32), mtt_s=mtt.astype(np.float32))
