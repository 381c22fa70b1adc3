import numpy as np
import pytest

from seeinpairs.errors import ImageError
from seeinpairs.explain.localization import (
    chance_energy,
    energy_inside,
    load_mask,
    pointing_game,
)


def test_scores_on_hand_made_maps(tmp_path):
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:4, 2:4] = True
    peak_inside = np.zeros((10, 10))
    peak_inside[3, 3] = -5.0  # sign does not matter
    peak_inside[8, 8] = 1.0
    assert pointing_game(peak_inside, mask) == 1.0
    assert energy_inside(peak_inside, mask) == pytest.approx(5 / 6)
    uniform = np.ones((10, 10))
    assert energy_inside(uniform, mask) == pytest.approx(chance_energy(mask)) == pytest.approx(0.04)
    assert pointing_game(np.zeros((10, 10)), mask) == 0.0
    assert np.isnan(pointing_game(uniform, np.zeros((10, 10), dtype=bool)))
    assert np.isnan(energy_inside(np.zeros((10, 10)), mask))
    # a map on another grid is resized onto the mask's
    assert energy_inside(np.kron(peak_inside, np.ones((2, 2))), mask) > 0.5


def test_masks_load_resized_and_bad_files_are_one_line_errors(tmp_path):
    from PIL import Image

    Image.fromarray((np.eye(4) * 255).astype(np.uint8)).save(tmp_path / "m.png")
    assert load_mask(tmp_path / "m.png", (8, 8)).shape == (8, 8)
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ImageError, match="bad.png: cannot read the mask"):
        load_mask(tmp_path / "bad.png")
