import numpy as np
import pytest
from PIL import Image

from seeinpairs.cases import CaseTable
from seeinpairs.datasets.synthetic import SiteProfile, SyntheticConfig, generate_synthetic, render


def _pixels(path):
    return np.asarray(Image.open(path))


def test_generator_is_deterministic_per_seed(tmp_path):
    a, _ = generate_synthetic(tmp_path / "a", SyntheticConfig(n_patients=10, seed=5))
    b, _ = generate_synthetic(tmp_path / "b", SyntheticConfig(n_patients=10, seed=5))
    c, _ = generate_synthetic(tmp_path / "c", SyntheticConfig(n_patients=10, seed=6))
    assert [x.case_id for x in a] == [x.case_id for x in b]
    for x, y in zip(a, b):
        assert (x.label, x.site, x.age, x.sex, x.split) == (y.label, y.site, y.age, y.sex, y.split)
        assert np.array_equal(_pixels(x.image), _pixels(y.image))
    assert any(not np.array_equal(_pixels(x.image), _pixels(y.image)) for x, y in zip(a, c))


def test_manifest_reloads_with_patients_sites_and_masks(tmp_path):
    table, task = generate_synthetic(tmp_path, SyntheticConfig(n_patients=30, seed=0))
    loaded = CaseTable.load(tmp_path / "manifest.csv", classes=task.classes)
    assert len(loaded) == len(table)
    assert len({c.patient for c in loaded}) == 30 and len(loaded) > 30  # several images for some patients
    assert {c.site for c in loaded} == {"site_a", "site_b", "site_c"}
    by_patient = {}
    for case in loaded:
        by_patient.setdefault(case.patient, set()).add(case.split)
    assert all(len(splits) == 1 for splits in by_patient.values())  # patient-level split
    for case in loaded:
        mask = _pixels(tmp_path / case.extra["mask"]) > 0
        assert mask.any() == (case.label == "abnormal")


def test_masks_match_the_lesions():
    config = SyntheticConfig(image_size=64)
    site = SiteProfile(noise=0.0, blur=0.0)
    anatomy = {"lung_dx": 0.2, "lung_rx": 0.14, "lung_ry": 0.28, "lung_cy": 0.48, "lung_darkness": 0.2,
               "texture": np.zeros((64, 64)), "rib_spacing": 0.09, "rib_phase": 0.0, "rib_strength": 0.04,
               "heart_rx": 0.11}
    lesion = {"x": 0.3, "y": 0.45, "r": 0.1}
    with_lesion, mask = render(np.random.default_rng(0), anatomy, site, config, lesion)
    without, empty = render(np.random.default_rng(0), anatomy, site, config, None)
    assert not empty.any() and mask.any()
    difference = with_lesion - without
    bright = difference > 0.5 * difference.max()
    iou = (bright & mask).sum() / (bright | mask).sum()
    assert iou > 0.8
    assert difference[mask].mean() > 5 * abs(difference[~mask]).mean()


def test_lesion_contrast_is_small_next_to_site_and_patient_variation(tmp_path):
    """The lesion's peak is within the between-image spread of healthy lung pixels, so no fixed
    intensity threshold separates it: a model has to judge relative to the anatomy and site."""
    config = SyntheticConfig(n_patients=60, seed=2)
    table, _ = generate_synthetic(tmp_path, config)
    healthy = np.stack([_pixels(c.image).astype(float) / 255 for c in table if c.label == "normal"])
    centre = config.image_size // 2
    lung_pixels = healthy[:, centre - 2, [int(config.image_size * 0.3), int(config.image_size * 0.7)]]
    spread = lung_pixels.std(axis=0).mean()
    assert config.lesion_contrast < 2.5 * spread


def test_unseen_site_goes_to_test_only(tmp_path):
    table, _ = generate_synthetic(tmp_path, SyntheticConfig(n_patients=40, unseen_sites=("site_c",)))
    assert {c.split for c in table if c.site == "site_c"} == {"test"}


def test_bad_generator_config_is_rejected():
    with pytest.raises(ValueError, match="unseen_sites"):
        SyntheticConfig(unseen_sites=("mars",))
