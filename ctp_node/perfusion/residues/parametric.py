"""Model-based deconvolution: each tissue curve fitted as ``F · (AIF ⊗ R)(t − δ)``.

Indicator-dilution theory gives the tissue curve as the arterial input convolved with the
flow-scaled residue ``F · R(t)``, delayed by the bolus's extra travel time δ. Instead of
inverting the convolution (which amplifies noise, so that the maximum of a noisy residue is
biased upwards and low flows look higher), the curve is fitted with a residue of a known
family — exponential (a well-mixed compartment), linear, gamma-distributed transit times or
box (plug flow): :data:`~model_curves.SHAPES` — of mean transit time MTT. The amplitude F
is linear and is solved in closed form; (shape, MTT, δ) are found by searching a dictionary
of model curves, coarse first, then finely around each shape's coarse optimum. Every voxel's
curve is given by its coefficients in the temporal basis
(:mod:`ctp_node.perfusion.tissue.compress`), so every model curve is projected once onto the
basis and the search is a matrix product.

Model curves are built from the study's own arterial input (a continuous model of it: the
fitted gamma-variate first pass, not an interpolation between frames) and sampled at the
tissue slices' own acquisition times, so sub-sample delays and the sampling itself are part
of the model (:mod:`ctp_node.perfusion.residues.model_curves`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from ctp_node.perfusion.residues import baseline
from ctp_node.perfusion.residues.model_curves import SHAPES, Dictionary, build_dictionary
from ctp_node.perfusion.residues.search import DictionarySearch
from ctp_node.perfusion.tissue.profiles import Profiles

#: The study's shape prior is estimated from at most this many voxels (no shape's prior
#: probability is taken below :data:`search.PRIOR_FLOOR`).
_PRIOR_VOXELS = 50000
_PRIOR_EM_STEPS = 50
#: Per-voxel fields of :class:`ModelFit`.
_VOXEL_FIELDS = ("flow", "mtt_s", "delay_s", "shape", "correlation", "atom", "passage_seen")


@dataclass(frozen=True)
class ModelFit:
    """Per-voxel fit (1-D arrays over voxels).

    flow : F, the residue amplitude, 1/s in tissue/AIF units (as :attr:`ResidueFeatures.peak`).
    mtt_s : mean transit time of the fitted residue, s.
    delay_s : δ, s (the time of the residue maximum relative to the AIF).
    shape : index into :data:`SHAPES`.
    correlation : cosine similarity of the curve and the model (0–1; a goodness of fit).
    atom : index of the model in the :class:`Dictionary`.
    shape_prior : the prior probability of each of :data:`SHAPES` the fit used (study-wide,
        :func:`study_shape_prior`); uniform unless estimated.
    passage_seen : the share of the best model's bolus passage that the acquisition saw
        (:attr:`Dictionary.passage_seen`); None when not recorded.
    """

    flow: np.ndarray
    mtt_s: np.ndarray
    delay_s: np.ndarray
    shape: np.ndarray
    correlation: np.ndarray
    atom: np.ndarray
    shape_prior: tuple[float, ...] = tuple(1 / len(SHAPES) for _ in SHAPES)
    passage_seen: np.ndarray | None = None


def fit(
    coefficients: np.ndarray,
    dictionary: Dictionary,
    chunk: int = 32768,
    workers: int = 1,
    delay_s: np.ndarray | None = None,
    delay_window_s: float = 0.0,
    flow_median: bool = False,
    shape_prior: np.ndarray | None = None,
) -> ModelFit:
    """Best model of every voxel ``(v, r)``: a coarse search over every shape, then the fine
    grid around each shape's coarse optimum; flow and MTT are then moved to their posterior means
    (:meth:`DictionarySearch.posterior`; with ``flow_median``, the flow to its posterior median).
    ``shape_prior`` (one probability per :data:`SHAPES`; default uniform) weighs the shapes
    in the choice of the best model and in the posterior.
    With ``delay_s`` ``(v,)`` and ``delay_window_s`` > 0, only models whose delay lies within
    that many seconds of the voxel's are considered (a delay measured otherwise, e.g. the
    deconvolved residue's onset). Chunks of ``chunk`` voxels are fitted on ``workers``
    threads."""
    out = {k: np.empty(coefficients.shape[0], np.float32) for k in _VOXEL_FIELDS}
    out["atom"] = np.empty(coefficients.shape[0], np.int64)
    search = DictionarySearch(dictionary, flow_median, shape_prior)

    def run(start: int) -> None:
        c = coefficients[start : start + chunk]
        near = None if delay_s is None or delay_window_s <= 0 else delay_s[start : start + chunk]
        chosen, score, flow, volume = search.best(c, near, delay_window_s)
        energy = np.sqrt(np.einsum("vr,vr->v", c, c))
        sl = slice(start, start + c.shape[0])
        d = dictionary
        out["flow"][sl] = flow
        out["mtt_s"][sl] = np.where(
            flow > 0, volume / np.maximum(flow, 1e-12), search.mtts[d.mtt_index[chosen]]
        )
        out["delay_s"][sl] = search.delays[d.delay_index[chosen]]
        out["shape"][sl] = d.shape[chosen]
        out["correlation"][sl] = np.maximum(score, 0) / np.maximum(energy, 1e-12)
        out["atom"][sl] = chosen
        out["passage_seen"][sl] = d.passage_seen[chosen]

    starts = range(0, coefficients.shape[0], chunk)
    with ThreadPoolExecutor(max(1, min(workers, len(starts)))) as threads:  # BLAS frees the GIL
        list(threads.map(run, starts))
    return ModelFit(**out, shape_prior=_prior_tuple(shape_prior))


def _prior_tuple(shape_prior: np.ndarray | None) -> tuple[float, ...]:
    """The shape prior as :attr:`ModelFit.shape_prior` records it (None: uniform)."""
    if shape_prior is None:
        return tuple(1 / len(SHAPES) for _ in SHAPES)
    return tuple(float(x) for x in shape_prior)


def model_flow(
    profiles: Profiles,
    slice_times_s: np.ndarray,
    arterial: Callable[[np.ndarray], np.ndarray],
    start_s: float,
    pool: Callable[[Profiles], np.ndarray] | None = None,
    workers: int = 1,
    delay_s: np.ndarray | None = None,
    delay_window_s: float = 0.0,
    flow_median: bool = False,
    own_amplitude: bool = False,
    study_prior: bool = False,
    free_baseline: bool = False,
) -> ModelFit:
    """The model of every voxel of ``profiles`` (:class:`ModelFit`: F in 1/s, MTT and delay δ
    in s, ...), fitted per group of slices sharing their acquisition times (``slice_times_s``
    ``(t, z)``); see :func:`build_dictionary` for ``arterial`` and ``start_s``.

    ``pool`` (e.g. :func:`pooling.pooled` with its settings) gives the curves that are fitted
    instead of each voxel's own: the best of many models fitted to one noisy low-flow curve is
    the sharp one that fits its noise, which raises low flows; a pool of like voxels does not.

    With ``own_amplitude``, the pool chooses the model (shape, MTT, delay) but each voxel's
    own curve gives its amplitude (:func:`own_amplitude_fit`).

    With ``study_prior``, the shapes are weighed by the study's own prior
    (:func:`study_shape_prior`) instead of equally.

    With ``free_baseline``, each voxel's baseline is a parameter of its fit
    (:mod:`ctp_node.perfusion.residues.baseline`): curves and model curves are compared
    without their constant parts.
    """
    own = profiles.coefficients
    curves = pool(profiles) if pool is not None else own
    projection = baseline.offset_projection(profiles.basis) if free_baseline else None
    if projection is not None:
        own, curves = own @ projection, curves @ projection
    groups = []
    for _, rows in profiles.groups():
        z = int(np.searchsorted(profiles.slice_rows, rows.start, side="right") - 1)
        bank = build_dictionary(arterial, start_s, slice_times_s[:, z], profiles.basis)
        if projection is not None:
            bank = baseline.projected(bank, projection)
        groups.append((rows, bank, None if delay_s is None else delay_s[rows]))
    prior = None
    if study_prior:
        stride = max(1, -(-curves.shape[0] // _PRIOR_VOXELS))
        likelihoods = [
            DictionarySearch(bank).shape_likelihoods(
                curves[rows][::stride], None if near is None else near[::stride], delay_window_s
            )
            for rows, bank, near in groups
        ]
        prior = study_shape_prior(np.concatenate(likelihoods))
    out: dict[str, np.ndarray] = {}
    for rows, bank, near in groups:
        fitted = fit(
            curves[rows],
            bank,
            workers=workers,
            delay_s=near,
            delay_window_s=delay_window_s,
            flow_median=flow_median,
            shape_prior=prior,
        )
        if own_amplitude and pool is not None:
            fitted = own_amplitude_fit(fitted, own[rows], curves[rows], bank)
        for name in _VOXEL_FIELDS:
            values = getattr(fitted, name)
            out.setdefault(name, np.empty(curves.shape[0], values.dtype))[rows] = values
    return ModelFit(**out, shape_prior=_prior_tuple(prior))


def study_shape_prior(likelihoods: np.ndarray, steps: int = _PRIOR_EM_STEPS) -> np.ndarray:
    """The prior probability of each residue shape that best explains a study's voxels, from
    each voxel's likelihood of each shape ``(v, shapes)``
    (:meth:`DictionarySearch.shape_likelihoods`), by expectation–maximisation of the mixture
    (uniform start).

    A low curve in noise fits every shape about equally well, and with equal priors the
    shapes it does not have are half of its posterior: shapes trade off against MTT, so the
    posterior MTT of faint tissue reads long or short depending on the noise, and its flow
    with it. The tissue of one brain shares one physiology; the voxels whose curves do tell
    the shapes apart show which family the study's tissue follows, and the faint voxels then
    borrow that. (Engine 0.18, with three shapes exponential / linear / box, our phantom σ 5 HU:
    exponential truth gave 0.985 / 0.014 / 0.001, linear truth 0.13 / 0.76 / 0.11; the
    independent phantom, exponential, 0.97–0.98.)"""
    usable = likelihoods[likelihoods.sum(axis=1) > 0]
    prior = np.full(likelihoods.shape[1], 1.0 / likelihoods.shape[1])
    if usable.shape[0] == 0:
        return prior
    for _ in range(steps):
        responsibility = usable * prior
        responsibility /= responsibility.sum(axis=1, keepdims=True)
        prior = responsibility.mean(axis=0)
    return prior


def own_amplitude_fit(
    fitted: ModelFit,
    own: np.ndarray,
    pooled: np.ndarray,
    dictionary: Dictionary,
    chunk: int = 65536,
) -> ModelFit:
    """``fitted`` (the models of the ``pooled`` curves ``(v, r)``) with each voxel's flow
    scaled by its ``own`` curve's projection on its model over the pooled curve's: the model
    (shape, MTT, delay) is the pool's, the amplitude the voxel's (a matched filter).

    A pool draws its curve from like neighbours, and at a faint curve's noise "like" reaches
    across boundaries that the noise hides: the faint core beside brighter penumbra, the thin
    grey-matter ribbon beside white matter. The pooled curve's shape is right, its height is
    the neighbours' mean: the faint core reads high, grey matter low. The voxel's own curve
    (already denoised by an edge-preserving filter) has the right height and more noise; its
    projection on the known model is the least-noisy amplitude it gives. A negative
    projection gives a flow of 0."""
    scale = np.ones(own.shape[0], np.float32)
    for start in range(0, own.shape[0], chunk):
        part = slice(start, start + chunk)
        atoms = dictionary.atoms[fitted.atom[part]]
        mine = np.einsum("vr,vr->v", own[part], atoms)
        theirs = np.einsum("vr,vr->v", pooled[part], atoms)
        scale[part] = np.where(theirs > 0, np.maximum(mine, 0) / np.maximum(theirs, 1e-12), 1)
    return replace(fitted, flow=(fitted.flow * scale).astype(np.float32))
