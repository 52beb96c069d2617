"""The search of a :class:`~ctp_node.perfusion.residues.model_curves.Dictionary` for the
models that explain each voxel's curve (:mod:`ctp_node.perfusion.residues.parametric` fits
with it): a coarse grid over every shape, each shape's coarse optimum refined on the fine grid,
the posterior means (or median) of flow and volume over the models, and each shape's
likelihood for the study's shape prior. Curves and models are coefficients in the temporal
basis, so every score is a matrix product."""

from __future__ import annotations

import numpy as np

from ctp_node.perfusion.residues.model_curves import (
    FINE_DELAY_S,
    SHAPES,
    Dictionary,
    fine_axes,
)

_COARSE_DELAY_S = 1.0
_COARSE_MTT_STEPS = 12
#: The posterior median of the flow is computed where the posterior's σ exceeds this share of
#: its mean; elsewhere the mean (within that share of the median) stands.
_MEDIAN_SPREAD = 0.02
#: No shape's prior probability is taken below this floor (a shape the study never shows stays
#: possible).
PRIOR_FLOOR = 1e-3
#: Rows per block when the shape likelihoods are computed on the fine grid (memory).
_LIKELIHOOD_CHUNK = 4096


class DictionarySearch:
    """The coarse-to-fine dictionary search of :func:`parametric.fit`."""

    def __init__(
        self,
        dictionary: Dictionary,
        flow_median: bool = False,
        shape_prior: np.ndarray | None = None,
    ) -> None:
        self.flow_median = flow_median
        self.delays, self.mtts = fine_axes()
        d = self.dictionary = dictionary
        # log prior of each atom's shape (None: uniform, i.e. no term)
        self.log_prior = None
        if shape_prior is not None:
            log_prior = np.log(np.maximum(np.asarray(shape_prior, np.float64), PRIOR_FLOOR))
            self.log_prior = (log_prior - log_prior.max()).astype(np.float32)[d.shape]
        n_delay, n_mtt = self.delays.size, self.mtts.size
        self.lookup = np.full((len(SHAPES), n_delay, n_mtt), -1, np.int64)
        self.lookup[d.shape, d.delay_index, d.mtt_index] = np.arange(d.shape.size)
        d_step = round(_COARSE_DELAY_S / FINE_DELAY_S)
        m_step = max(1, (n_mtt - 1) // (_COARSE_MTT_STEPS - 1))
        coarse = self.lookup[:, ::d_step, ::m_step]
        self.first = coarse[coarse >= 0]
        self.first_atoms = d.atoms[self.first]
        self.first_norms = d.norms[self.first].astype(np.float32)
        self.first_mtts = self.mtts[d.mtt_index[self.first]].astype(np.float32)
        self.first_shapes = d.shape[self.first]
        # Column of each (shape, coarse delay, coarse MTT) among the coarse atoms (-1: none).
        self.column = np.full(coarse.shape, -1, np.int64)
        self.column[coarse >= 0] = np.arange(self.first.size)
        self.coarse_delays = self.delays[::d_step]
        # Neighbourhood of a coarse optimum on the fine grid (refined per shape).
        self.dd = np.arange(-(d_step - 1), d_step)
        self.dm = np.arange(-(m_step + 1), m_step + 2)

    def best(
        self, c: np.ndarray, delay_s: np.ndarray | None = None, window_s: float = 0.0
    ) -> tuple[np.ndarray, ...]:
        """Atom and score (projection on the unit atom) of the best model of each row, and
        the posterior means of its flow and volume (:meth:`posterior`)."""
        # The coarse search, per group of rows sharing their coarse atoms (delay window): the
        # best coarse model of each shape.
        groups = self._windows(delay_s, window_s)
        coarse = []
        best = np.full((len(SHAPES), c.shape[0]), -1, np.int64)
        # The noise variance per coefficient (from the best coarse fit) sets how much the
        # prior weighs against the fit: log posterior = s² / 2σ² + log prior.
        two_sigma2 = np.empty(c.shape[0], np.float32)
        energy = np.einsum("vr,vr->v", c, c)
        for rows, columns in groups:
            values = c[rows] @ self.first_atoms[columns].T
            top = values.max(axis=1)
            two_sigma2[rows] = 2 * _noise_variance(energy[rows], top, c.shape[1])
            shapes = self.first_shapes[columns]
            for s in np.unique(shapes):
                mine = columns[shapes == s]
                pick = self._map(values[:, shapes == s], self.first[mine], two_sigma2[rows])
                best[s, rows] = self.first[mine[pick]]
            coarse.append(values)
        chosen, score = self._refine(c, best, two_sigma2)
        flow = np.empty(c.shape[0], np.float32)
        volume = np.empty(c.shape[0], np.float32)
        for (rows, columns), values in zip(groups, coarse, strict=True):
            flow[rows], volume[rows] = self.posterior(
                c[rows], values, columns, chosen[rows], score[rows]
            )
        return chosen, score, flow, volume

    def _refine(
        self, c: np.ndarray, best: np.ndarray, two_sigma2: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best fine model of each row of ``c``: each shape's coarse optimum (``best``,
        ``(shapes, v)``, -1 where the shape has none) refined on the fine grid around it, then
        the most probable of the refined ones.

        Every shape is refined, not only the best coarse one: a box residue's curve changes
        sharply with its MTT, so that between two coarse box MTTs a smooth exponential of
        another delay and a third of the MTT may fit better — and read the flow 3× high —
        while the box at the right MTT, on the fine grid, fits best of all."""
        d = self.dictionary
        n_delay, n_mtt = self.delays.size, self.mtts.size
        chosen = np.full(c.shape[0], -1, np.int64)
        score = np.full(c.shape[0], -np.inf, np.float32)
        key = np.full(c.shape[0], -np.inf, np.float32)
        for s in range(best.shape[0]):
            for group in _equal(best[s]):
                k = best[s, group[0]]
                if k < 0:
                    continue
                jd = np.clip(d.delay_index[k] + self.dd, 0, n_delay - 1)
                jm = np.clip(d.mtt_index[k] + self.dm, 0, n_mtt - 1)
                near = np.unique(self.lookup[s, jd][:, jm].ravel())
                near = near[near >= 0]
                values = c[group] @ d.atoms[near].T
                keys = self._key(values, near, two_sigma2[group])
                pick = np.argmax(values if self.log_prior is None else keys, axis=1)
                top = values[np.arange(group.size), pick]
                mine = keys[np.arange(group.size), pick]
                better = mine > key[group]
                rows = group[better]
                chosen[rows] = near[pick[better]]
                score[rows] = top[better]
                key[rows] = mine[better]
        return chosen, score

    def _key(self, values: np.ndarray, atoms: np.ndarray, two_sigma2: np.ndarray) -> np.ndarray:
        """Per row of projections ``values`` ``(v, k)`` on ``atoms`` ``(k,)``, the log posterior
        of each model × 2σ² (up to a constant): the squared projection plus 2σ² × the log
        prior of the atom's shape, if any."""
        key = np.maximum(values, 0)
        np.square(key, out=key)
        if self.log_prior is not None:
            key += np.multiply.outer(two_sigma2, self.log_prior[atoms])
        return key

    def _map(self, values: np.ndarray, atoms: np.ndarray, two_sigma2: np.ndarray) -> np.ndarray:
        """Per row of projections ``values`` ``(v, k)`` on ``atoms`` ``(k,)``, the column of the
        most probable model: the largest projection, weighed by the shape prior if any."""
        if self.log_prior is None:
            return np.argmax(values, axis=1)
        return np.argmax(self._key(values, atoms, two_sigma2), axis=1)

    def shape_likelihoods(
        self, c: np.ndarray, delay_s: np.ndarray | None = None, window_s: float = 0.0
    ) -> np.ndarray:
        """Per row of ``c`` ``(v, r)``, the likelihood of each of :data:`SHAPES` ``(v, shapes)``:
        the mean over that shape's models on the fine grid (delays within half a coarse step
        of the row's coarse delay window) of exp((s² − s_max²) / 2σ²), as in
        :meth:`posterior` (0 for a shape without models).

        The fine grid, not the coarse one: a box residue's curve changes sharply with its
        MTT, so that on the coarse grid (MTTs 33 % apart) no box model fits a box curve
        between two of them as well as a smooth exponential of another delay does, and a
        study of box residues read as half exponential (issue 33)."""
        d = self.dictionary
        out = np.zeros((c.shape[0], len(SHAPES)), np.float64)
        energy = np.einsum("vr,vr->v", c, c)
        half = round(_COARSE_DELAY_S / FINE_DELAY_S) // 2
        for rows, columns in self._windows(delay_s, window_s):
            delays = np.unique(d.delay_index[self.first[columns]])
            near = np.abs(d.delay_index[:, None] - delays[None]).min(axis=1) <= half
            atoms = np.flatnonzero(near)  # in the dictionary's order: shape by shape
            shapes = d.shape[atoms]
            starts = np.flatnonzero(np.r_[True, np.diff(shapes) != 0])
            counts = np.diff(np.r_[starts, atoms.size])
            rows = np.arange(c.shape[0])[rows]
            for start in range(0, rows.size, _LIKELIHOOD_CHUNK):
                part = rows[start : start + _LIKELIHOOD_CHUNK]
                values = np.maximum(c[part] @ d.atoms[atoms].T, 0)
                top = values.max(axis=1)
                sigma2 = _noise_variance(energy[part], top, c.shape[1])
                np.square(values, out=values)
                values -= np.square(top)[:, None]
                values *= (0.5 / sigma2).astype(np.float32)[:, None]
                weight = np.exp(values, out=values)  # in (0, 1]: float32 is enough
                sums = np.add.reduceat(weight, starts, axis=1, dtype=np.float64)
                out[part[:, None], shapes[starts][None]] = sums / counts
        return out

    def _windows(
        self, delay_s: np.ndarray | None, window_s: float
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Groups of rows (indices) with the coarse atoms (columns) each may choose from:
        those whose delay lies within ``window_s`` of the row's ``delay_s`` — at least the
        nearest coarse delay (coarse step 1 s); rows near the ends of the delay range have
        fewer. Without ``delay_s``, one group of every row and every coarse atom."""
        every = np.arange(self.first.size)
        if delay_s is None:
            return [(slice(None), every)]
        window = max(window_s, 0.5 * _COARSE_DELAY_S)
        axis = self.coarse_delays
        delay = np.clip(delay_s, axis[0], axis[-1]).astype(np.float64)
        count = int(np.floor(2 * window / _COARSE_DELAY_S + 1e-9)) + 1
        first = np.ceil((delay - window - axis[0]) / _COARSE_DELAY_S - 1e-9).astype(np.int64)
        j = first[:, None] + np.arange(count)[None]  # (v, count) coarse delay indices
        inside = (j >= 0) & (j < axis.size)
        inside &= np.abs(axis[np.clip(j, 0, axis.size - 1)] - delay[:, None]) <= window + 1e-6
        # Rows with the same first delay and the same delays inside share their columns.
        key = (first - first.min()) << count | (inside << np.arange(count)).sum(axis=1)
        out = []
        for rows in _equal(key):
            delays = j[rows[0]][inside[rows[0]]]
            columns = self.column[:, delays, :]
            out.append((rows, columns[columns >= 0]))
        return out

    def posterior(
        self,
        c: np.ndarray,
        coarse: np.ndarray,
        columns: np.ndarray,
        chosen: np.ndarray,
        score: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Posterior means of the flow F and of the volume F · MTT of each row, over the
        coarse models (projections ``coarse``, ``(v, k)``, of the coarse atoms ``columns``
        ``(k,)``) and the best fine one (``chosen``, projection ``score``).

        A low curve in noise fits many models almost equally well — residue shapes and
        MTTs that trade off against each other, with flows a factor of 2–3 apart — and the
        best fit is the one the noise happens to favour: the flow of each voxel is spread
        far more widely than the curve's information allows, and biased with it. With
        Gaussian noise of variance σ² per coefficient and F at its least-squares value, a
        unit atom of projection s explains s² of the curve's energy and has a likelihood
        ∝ exp(s² / 2σ²); σ² is the best model's residual energy over the degrees of freedom
        left. The prior is uniform over the coarse grid (delays, log MTT) inside the delay
        window, none outside; over the shapes it is the study's
        (:func:`parametric.study_shape_prior`), or uniform. Where the data single one model
        out, the means are that model's values.

        With :attr:`flow_median`, the flow is the posterior median instead (the volume stays
        the mean). A faint curve's posterior is skewed: sharp models that fit its noise give
        it a long tail of high flows, which pulls the mean up — the flow of little-perfused
        tissue reads high and the core small. The median minimises the expected absolute
        error, the measure the maps are judged by.
        """
        d = self.dictionary
        energy = np.einsum("vr,vr->v", c, c)
        best = np.maximum(score, 0)
        sigma2 = _noise_variance(energy, best, c.shape[1])
        flow = np.maximum(coarse, 0)
        weight = np.square(flow)
        weight -= np.square(best)[:, None]
        weight *= (0.5 / sigma2)[:, None].astype(np.float32)
        if self.log_prior is not None:  # relative to the chosen model's posterior
            weight += self.log_prior[self.first[columns]][None]
            weight -= self.log_prior[chosen][:, None]
        np.minimum(weight, 0, out=weight)
        np.exp(weight, out=weight)
        flow /= self.first_norms[columns]  # F of each coarse model
        best_flow = best / d.norms[chosen]
        total = weight.sum(axis=1) + 1.0
        mean_flow = (np.einsum("vk,vk->v", weight, flow) + best_flow) / total
        point_flow = mean_flow
        if self.flow_median:
            # |median − mean| ≤ the posterior's σ: where σ is within 2 % of the mean, the mean
            # stands (most voxels; sorting every row's models would cost seconds).
            square = (np.einsum("vk,vk,vk->v", weight, flow, flow) + best_flow**2) / total
            broad = np.flatnonzero(square - mean_flow**2 > (_MEDIAN_SPREAD * mean_flow) ** 2)
            point_flow = mean_flow.copy()
            point_flow[broad] = _weighted_median(flow[broad], weight[broad], best_flow[broad])
        weight *= flow
        best_volume = best_flow * self.mtts[d.mtt_index[chosen]]
        mean_volume = (weight @ self.first_mtts[columns] + best_volume) / total
        return point_flow.astype(np.float32), mean_volume.astype(np.float32)


def _noise_variance(energy: np.ndarray, score: np.ndarray, components: int) -> np.ndarray:
    """Noise variance per coefficient of curves of ``energy`` whose best model explains
    ``score``² of it: the residual energy over the degrees of freedom left."""
    return np.maximum(energy - np.square(score), 1e-12) / max(components - 4, 1)


def _weighted_median(values: np.ndarray, weights: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """Per row, the (lower) weighted median of ``values`` ``(v, k)`` (weights ``(v, k)``) and
    one more value ``extra`` ``(v,)`` of weight 1: the smallest value at which the cumulative
    weight of the sorted values reaches half the total."""
    v = np.concatenate([values, extra[:, None]], axis=1)
    w = np.concatenate([weights, np.ones((v.shape[0], 1), weights.dtype)], axis=1)
    order = np.argsort(v, axis=1)
    cumulative = np.cumsum(np.take_along_axis(w, order, axis=1), axis=1)
    j = np.minimum((cumulative < 0.5 * cumulative[:, -1:]).sum(axis=1), v.shape[1] - 1)
    return np.take_along_axis(v, order[np.arange(v.shape[0]), j][:, None], axis=1)[:, 0]


def _equal(key: np.ndarray) -> list[np.ndarray]:
    """Indices of the elements of ``key`` ``(v,)``, grouped by value."""
    order = np.argsort(key, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(key[order])) + 1)
