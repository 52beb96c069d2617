"""Stage 5 of the engine: the maps (CBF, CBV, MTT, TTP, Tmax, the oSVD delay) from the residue
functions, and the tissue mask (the parenchyma without its large vessels)."""

from __future__ import annotations

import numpy as np

from ctp_node.perfusion.errors import NoBrainTissueError
from ctp_node.perfusion.parameters import PerfusionParameters
from ctp_node.perfusion.prepare.stage import Prepared
from ctp_node.perfusion.residues.stage import Residues
from ctp_node.perfusion.tissue.stage import TissueCurves


def perfusion_maps(
    prepared: Prepared, tissue: TissueCurves, residues: Residues, p: PerfusionParameters
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """CBF (mL/100 g/min), CBV (mL/100 g), MTT (s), TTP (s), Tmax (s) and the oSVD delay (s)
    of the tissue, and the tissue mask (the parenchyma without its large vessels)."""
    density_ratio = p.hematocrit_factor / p.brain_density_g_ml
    m = prepared.parenchyma
    maps = {name: np.zeros(prepared.shape, np.float32) for name in ("CBF", "CBV", "Tmax", "delay")}
    maps["CBF"][m] = 6000.0 * density_ratio * residues.flow
    maps["CBV"][m] = 100.0 * density_ratio * residues.volume
    maps["Tmax"][m] = residues.tmax_s
    maps["delay"][m] = residues.onset_s
    tissue_mask = np.zeros(prepared.shape, bool)
    tissue_mask[m] = residues.tissue
    maps["CBF"] = np.maximum(maps["CBF"], 0)
    maps["CBV"] = np.maximum(maps["CBV"], 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mtt = np.where(maps["CBF"] > 0, 60.0 * maps["CBV"] / maps["CBF"], 0.0)
    maps["MTT"] = mtt.astype(np.float32)
    maps["TTP"] = tissue.ttp_s
    maps = {name: maps[name] for name in ("CBF", "CBV", "MTT", "TTP", "Tmax", "delay")}
    for name in maps:
        maps[name] = np.where(tissue_mask, maps[name], 0).astype(np.float32)
    if tissue_mask.sum() == 0:
        raise NoBrainTissueError("No perfused brain tissue remained after excluding vessels.")
    return maps, tissue_mask
