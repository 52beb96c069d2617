"""Drawing the summary pages: slices shrunk as a display would, montage tiles where their labels
say, and each slice of a colour map shown in the colour of its values."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pydicom
import pytest
from matplotlib import colormaps
from matplotlib.colors import to_rgb

from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.result import PerfusionResult
from ctp_node.report import pages
from ctp_node.report.parametric_map import map_window
from ctp_node.report.summary_pages import render_map_page


def _area_mean_1d(values: np.ndarray, size: int) -> np.ndarray:
    """The mean of ``values`` (pixels of width 1) over each of ``size`` equal intervals."""
    n = len(values)
    width = n / size
    means = []
    for k in range(size):
        start, stop = k * width, (k + 1) * width
        total = sum(
            value * max(0.0, min(stop, i + 1) - max(start, i)) for i, value in enumerate(values)
        )
        means.append(total / width)
    return np.array(means)


@pytest.mark.parametrize("n, size", [(512, 220), (9, 4), (7, 7), (5, 12), (16, 8)])
def test_each_new_pixel_is_the_mean_of_what_it_covers(n: int, size: int) -> None:
    if n < 2 * size:  # exact: any values
        row = np.random.default_rng(3).uniform(0, 100, n).astype(np.float32)
        tolerance = 1e-3
    else:  # whole blocks are averaged first, a slightly wider footprint: close on an image
        row = (50 + 40 * np.sin(np.arange(n) * 2 * np.pi / 40)).astype(np.float32)
        tolerance = 1.0
    shrunk, coverage = pages.area_mean(np.tile(row, (1, 3, 1)), (3, size))
    np.testing.assert_allclose(shrunk[0, 1], _area_mean_1d(row, size), atol=tolerance)
    assert np.all(coverage == 1.0)
    constant = pages.area_mean(np.full((2, n, n), 42.0), (size, size))[0]
    np.testing.assert_allclose(constant, 42.0, rtol=1e-4)  # float32 running sums


def test_a_masked_mean_leaves_out_what_is_outside_the_mask_and_nan() -> None:
    values = np.array([[[10.0, 20.0, 30.0, np.nan], [10.0, 20.0, 30.0, 40.0]]])
    mask = np.array([[[True, False, True, True], [True, False, False, False]]])
    mean, coverage = pages.area_mean(values, (1, 2), mask=mask)
    # Left half: 10 and 10 masked in; right half: only the 30 (the NaN weighs nothing in the
    # mean, but is covered by the mask).
    np.testing.assert_allclose(mean[0, 0], [10.0, 30.0])
    np.testing.assert_allclose(coverage[0, 0], [0.5, 0.5])
    only_nan = pages.area_mean(values, (1, 2), mask=np.isnan(values))
    assert np.isnan(only_nan[0][0, 0, 1]) and only_nan[1][0, 0, 1] == 0.25
    nothing = pages.area_mean(values, (1, 2), mask=np.zeros_like(mask))
    assert np.all(np.isnan(nothing[0])) and np.all(nothing[1] == 0.0)


def test_montage_tiles_are_drawn_in_their_boxes_pixel_for_pixel() -> None:
    montage = pages.montage_layout(5, (0.1, 0.1, 0.8, 0.7), aspect=1.0)
    shades = np.arange(1, 6, dtype=np.uint8) * 40
    tiles = np.broadcast_to(
        shades[:, None, None, None], (5, montage.tile_height, montage.tile_width, 3)
    )
    figure = pages.new_page()
    pages.draw_montage(figure, np.ascontiguousarray(tiles), montage)
    page = pages.to_rgb(figure)
    assert montage.columns * montage.rows >= 5 and montage.tile_width > 100
    for index, shade in enumerate(shades):
        left, bottom, width, height = montage.tile_box(index)
        x0, x1 = round(left * pages.PAGE_WIDTH), round((left + width) * pages.PAGE_WIDTH)
        y1 = round((1 - bottom) * pages.PAGE_HEIGHT)
        y0 = round((1 - bottom - height) * pages.PAGE_HEIGHT)
        assert np.all(page[y0:y1, x0:x1] == shade), index
        assert np.all(page[y0:y1, x1 + 1] == 0)  # the gap to the next tile


def test_each_slice_of_a_map_page_shows_the_colour_of_its_values(
    result: PerfusionResult, acquisition: Acquisition, source_headers: list[pydicom.Dataset]
) -> None:
    page = render_map_page(
        "CBF", result, acquisition, source_headers[0], footer="footer", research=True
    )
    n_z, rows, columns = acquisition.hu.shape[1:]
    dy, dx = acquisition.pixel_spacing_mm
    montage = pages.montage_layout(n_z, (0.01, 0.03, 0.86, 0.88), aspect=rows * dy / (columns * dx))
    jet = colormaps["jet"]
    lower, upper = map_window("CBF", result)
    for z in range(n_z):
        left, bottom, width, height = montage.tile_box(z)
        # The tile's centre: the map there is z + 0.01 * 16 + 0.0001 * 16.
        x = round((left + width * 0.5) * pages.PAGE_WIDTH)
        y = round((1 - bottom - height * 0.5) * pages.PAGE_HEIGHT)
        expected = np.array(jet((z + 0.1616 - lower) / (upper - lower))[:3]) * 255
        np.testing.assert_allclose(page[y, x], expected, atol=6, err_msg=f"slice {z}")
    # Outside the tissue (the first 4 × 4 pixels of the first slice): black.
    left, bottom, width, height = montage.tile_box(0)
    x = round((left + width * 2 / columns) * pages.PAGE_WIDTH)
    y = round((1 - bottom - height + height * 2 / rows) * pages.PAGE_HEIGHT)
    assert np.all(page[y, x] == 0)


def test_labels_drawn_once_look_as_texts_drawn_on_the_page() -> None:
    """The cached label layer over a montage gives the page that drawing each text on it
    gives, to one grey level (rounding of the two blends); a second page reuses the layer."""
    grey = np.full((1, 200, 300, 3), 90, np.uint8)
    montage = pages.montage_layout(1, (0.1, 0.1, 0.5, 0.5), aspect=200 / 300)
    labels = [
        pages.Label(0.12, 0.12, "3/16  z 10.0 mm", pages.style(color="white", fontsize=11)),
        pages.Label(0.5, 0.98, "Ünïcödé – banner", pages.style(color="#ffd24d", va="top")),
    ]

    def page(cached: bool) -> np.ndarray:
        figure = pages.new_page()
        pages.draw_montage(figure, grey, montage)
        if cached:
            pages.draw_labels(figure, labels)
        else:
            for label in labels:
                figure.text(label.x, label.y, label.text, **dict(label.style))
        return pages.to_rgb(figure).astype(int)

    direct = page(cached=False)
    assert np.abs(page(cached=True) - direct).max() <= 1
    assert np.count_nonzero(direct) > 0
    hits = pages._label_layer.cache_info().hits
    page(cached=True)
    assert pages._label_layer.cache_info().hits == hits + 1


def test_a_mask_changed_in_place_is_not_served_from_the_coverage_cache() -> None:
    planes = np.ones((1, 8, 8), np.float32)
    mask = np.ones((1, 8, 8), bool)
    _, full = pages.area_mean(planes, (4, 4), mask=mask)
    mask[:, :4] = False  # the same array, other content
    _, half = pages.area_mean(planes, (4, 4), mask=mask)
    np.testing.assert_allclose(full, 1.0)
    np.testing.assert_allclose(half[:, :2], 0.0)
    np.testing.assert_allclose(half[:, 2:], 1.0)


def test_tissue_without_a_supported_value_is_grey_and_counted(
    result: PerfusionResult, acquisition: Acquisition, source_headers: list[pydicom.Dataset]
) -> None:
    """A slice whose CBV the result marks unsupported is drawn in the pages' grey (not in a
    colour of the scale, not black as the background); the slices around it keep their
    colours."""
    marked = np.zeros(result.tissue_mask.shape, bool)
    marked[1] = result.tissue_mask[1]
    marked_result = replace(result, unsupported={"CBV": marked})
    page = render_map_page(
        "CBV", marked_result, acquisition, source_headers[0], footer="footer", research=True
    )
    n_z, rows, columns = acquisition.hu.shape[1:]
    dy, dx = acquisition.pixel_spacing_mm
    montage = pages.montage_layout(n_z, (0.01, 0.03, 0.86, 0.88), aspect=rows * dy / (columns * dx))
    grey = np.array(to_rgb(pages.UNSUPPORTED_GREY)) * 255
    for z in range(n_z):
        left, bottom, width, height = montage.tile_box(z)
        x = round((left + width * 0.5) * pages.PAGE_WIDTH)
        y = round((1 - bottom - height * 0.5) * pages.PAGE_HEIGHT)
        is_grey = np.allclose(page[y, x], grey, atol=2)
        assert is_grey == (z == 1), f"slice {z}: {page[y, x]}"
