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
    """CBF (mL/100 g/min), CBV (mL/100 g), MTT (s), TTP (s), Tmax (s), the oSVD delay (s) and,
    with the model fit, the share of each voxel's bolus passage the acquisition saw
    (``passage_seen``, 0–1) of the tissue, and the tissue mask (the parenchyma without its
    large vessels)."""
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
    names = ["CBF", "CBV", "MTT", "TTP", "Tmax", "delay"]
    if residues.passage_seen is not None:
        maps["passage_seen"] = np.zeros(prepared.shape, np.float32)
        maps["passage_seen"][m] = residues.passage_seen
        names.append("passage_seen")
    maps = {name: maps[name] for name in names}
    for name in maps:
        maps[name] = np.where(tissue_mask, maps[name], 0).astype(np.float32)
    if tissue_mask.sum() == 0:
        raise NoBrainTissueError("No perfused brain tissue remained after excluding vessels.")
    return maps, tissue_mask


#: A voxel whose fitted bolus passage lies less than this share inside the acquisition has not
#: been seen to wash out: its CBV and MTT rest on the model's extrapolation of the curve past
#: the last image (CBF, the curve's initial slope, does not). 0.8: a fifth of the passage
#: unseen. On our phantom (60 s) 0.02 % of the tissue is below it; on a 50 s acquisition of a
#: lesion delayed 7 s with MTTs of 11–14 s, 93 % of the Tmax > 6 s region (docs/measurements.md).
PASSAGE_SEEN_MIN = 0.8
#: A voxel whose fitted bolus passage lies less than this share inside the acquisition gets no
#: CBV or MTT in the outputs (NaN in the Parametric Maps, grey on the pages): more of its curve
#: is the model's extrapolation than measurement. 0.5: on the Kudo and plateau families cut to
#: 25–30 frames the CBV and MTT of voxels that saw 0.2–0.5 of their passage read +14…+45 % and
#: −31…+37 % (median per bin), while those that saw 0.5–0.8 read within ±20 % on the plateau
#: residues and −3…−31 % on 24 s box, linear and exponential ones (docs/measurements.md,
#: issue 33 session 30). CBF (the initial slope) and Tmax (the arrival) stay measured.
PASSAGE_SUPPORT_MIN = 0.5
#: The study is warned about when at least this share of the Tmax > 6 s region (or, without
#: one, of the tissue) saw less than :data:`PASSAGE_SEEN_MIN` of its passage.
PASSAGE_WARN_SHARE = 0.1


def passage_warning(
    passage_seen: np.ndarray, tissue: np.ndarray, tmax6: np.ndarray, voxel_ml: float
) -> str | None:
    """A warning when much of the hypoperfused tissue (``tmax6``; all ``tissue`` without it)
    was cut short by the end of the acquisition (``passage_seen`` below
    :data:`PASSAGE_SEEN_MIN`), else None."""
    region = tmax6 & tissue if np.any(tmax6 & tissue) else tissue
    short = region & (passage_seen < PASSAGE_SEEN_MIN)
    share = float(short.sum()) / max(int(region.sum()), 1)
    if share < PASSAGE_WARN_SHARE:
        return None
    where = "of the Tmax > 6 s region" if region is not tissue else "of the tissue"
    unseen = tissue & (passage_seen < PASSAGE_SUPPORT_MIN)
    left_out = (
        f" Where less than {100 * PASSAGE_SUPPORT_MIN:.0f} % was seen "
        f"({unseen.sum() * voxel_ml:.1f} ml) they are not reported (NaN in the Parametric "
        "Maps, grey on the pages)."
        if unseen.any()
        else ""
    )
    return (
        f"The acquisition ended before the contrast had passed through "
        f"{short.sum() * voxel_ml:.1f} ml ({100 * share:.0f} % {where}; less than "
        f"{100 * PASSAGE_SEEN_MIN:.0f} % of its passage seen): CBV and MTT there rest on the "
        "model's extrapolation past the last image; a longer acquisition would measure them."
        + left_out
    )


def unsupported_values(
    maps: dict[str, np.ndarray], tissue: np.ndarray, last_time_s: float
) -> dict[str, np.ndarray]:
    """The tissue voxels whose value the acquisition cannot support, by map: CBV and MTT where
    less than :data:`PASSAGE_SUPPORT_MIN` of the voxel's bolus passage was acquired (with the
    model fit's ``passage_seen``), TTP where the curve peaks on the last image of the grid
    (``last_time_s``: the peak may come later). CBF and Tmax come from the start of the
    passage, which every analysed voxel shows. Maps without a rule are absent."""
    unsupported = {"TTP": tissue & (maps["TTP"] >= last_time_s - 1e-3)}
    if "passage_seen" in maps:
        short = tissue & (maps["passage_seen"] < PASSAGE_SUPPORT_MIN)
        unsupported |= {"CBV": short, "MTT": short}
    return unsupported
