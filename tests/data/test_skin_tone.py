"""Estimated ITA°: the formula, Chardon's categories, and the skin found around a drawn lesion."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from skimage.color import lab2rgb

from skinonnx.data import skin_tone as st


def test_formula_and_categories() -> None:
    assert st.ita_degrees(70.0, 20.0) == pytest.approx(45.0)  # arctan(20 / 20)
    assert st.ita_degrees(50.0, 12.0) == pytest.approx(0.0)
    assert st.ita_degrees(30.0, 20.0) == pytest.approx(-45.0)
    assert math.isnan(st.ita_degrees(60.0, 0.0))
    cases = {60: "very light", 55: "light", 41.5: "light", 41: "intermediate", 28: "tan", 10: "brown",
             -29.9: "brown", -30: "dark", -80: "dark"}
    for ita, name in cases.items():
        assert st.ita_category(ita) == name, ita
    assert st.ita_category(float("nan")) == st.UNKNOWN


def _lesion_image(lightness: float, b_star: float, size: int = 32) -> np.ndarray:
    """Skin of the given L*, b* (a* = 10) with a dark brown lesion in the middle and black corners."""
    lab = np.empty((size, size, 3))
    lab[...] = (lightness, 10.0, b_star)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    radius = np.hypot(yy, xx)
    lab[radius < size * 0.3] = (25.0, 15.0, 15.0)  # the lesion: must not count as skin
    lab[radius > size * 0.68] = (3.0, 0.0, 0.0)  # a dermatoscope's vignette: neither
    return (lab2rgb(lab) * 255).round().astype(np.uint8)


@pytest.mark.parametrize(("lightness", "b_star", "category"),
                         [(75.0, 12.0, "very light"), (62.0, 14.0, "light"), (55.0, 18.0, "tan"),
                          (40.0, 20.0, "brown")])
def test_estimate_finds_the_skin_not_the_lesion(lightness: float, b_star: float, category: str) -> None:
    ita = st.estimate_ita(_lesion_image(lightness, b_star))
    expected = math.degrees(math.atan((lightness - 50) / b_star))
    assert ita == pytest.approx(expected, abs=1.5)  # 8-bit rounding of the drawn colour
    assert st.ita_category(ita) == category


def test_from_file_and_bad_shapes(tmp_path) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(_lesion_image(62.0, 14.0, size=200)).save(path)
    assert st.estimate_ita_file(path) == pytest.approx(math.degrees(math.atan(12 / 14)), abs=1.5)
    with pytest.raises(ValueError):
        st.estimate_ita(np.zeros((8, 8)))
