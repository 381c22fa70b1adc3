import numpy as np
import pytest

from seeinpairs.datasets.synthetic import SyntheticConfig
from seeinpairs.datasets.synthetic_attributes import (
    ImageSpec,
    random_spec,
    render_spec,
    write_images,
)


def _render(spec: ImageSpec, seed: int = 5) -> tuple[np.ndarray, dict]:
    return render_spec(np.random.default_rng(seed), spec, SyntheticConfig(image_size=64, lesion_contrast=0.35))


def test_lesion_side_follows_the_radiographic_convention():
    base = {"age": 50.0, "sex": "F", "site": "site_a", "lesion": True, "lesion_radius": 0.12}
    right, truth = _render(ImageSpec(lesion_side="right", **base))
    left, _ = _render(ImageSpec(lesion_side="left", **base))
    difference = right - left  # same draws in the same order: only the lesion moved
    assert difference[:, :32].mean() > 0.01 > difference[:, 32:].mean()  # patient's right = image left
    assert truth == {"age": 50.0, "sex": "F", "site": "site_a", "lesion": True, "lesion_side": "right",
                     "lesion_radius": 0.12}


def test_larger_lesions_add_more_signal_and_no_lesion_records_none():
    base = {"age": 50.0, "sex": "M", "site": "site_a", "lesion": True, "lesion_side": "left"}
    none, truth = _render(ImageSpec(age=50.0, sex="M", site="site_a"))
    assert truth["lesion"] is False and truth["lesion_side"] is None and truth["lesion_radius"] is None
    large, _ = _render(ImageSpec(lesion_radius=0.13, **base))
    small, _ = _render(ImageSpec(lesion_radius=0.05, **base))
    assert (large - none).sum() > (small - none).sum() > 0
    with pytest.raises(ValueError, match="site"):
        _render(ImageSpec(age=50.0, sex="M", site="site_z"))


def test_random_specs_respect_fixed_attributes(tmp_path):
    rng = np.random.default_rng(0)
    config = SyntheticConfig()
    specs = [random_spec(rng, config, lesion_rate=1.0, age_range=(65, 85), sites=["site_b"], sex="F",
                         radius_range=(0.11, 0.14)) for _ in range(20)]
    assert all(s.sex == "F" and s.site == "site_b" and 65 <= s.age <= 85 and s.lesion for s in specs)
    assert all(0.11 <= s.lesion_radius <= 0.14 for s in specs)
    records = write_images(tmp_path, specs[:3], config, seed=1, prefix="x")
    assert [r["image_id"] for r in records] == ["x_0000", "x_0001", "x_0002"]
    assert all((tmp_path / f"{r['image_id']}.png").is_file() for r in records)
