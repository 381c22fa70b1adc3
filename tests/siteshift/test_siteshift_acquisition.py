from collections import defaultdict

import numpy as np
import pytest
from PIL import Image
from siteshift_data import write_images

from seeinpairs.errors import ConfigError, RegistryError
from seeinpairs.imaging import load_image
from seeinpairs.siteshift import (
    AcquisitionTransform,
    assign_sites,
    create_protocol,
    list_protocols,
    simulate_sites,
)


# ----- the transform ------------------------------------------------------------------------------------
def test_identity_keeps_pixels_and_kind():
    rng = np.random.default_rng(0)
    grey = (rng.random((9, 11)) * 255).astype(np.uint8)
    colour = (rng.random((9, 11, 3)) * 255).astype(np.uint8)
    assert np.array_equal(AcquisitionTransform().apply(grey), grey)
    assert np.array_equal(AcquisitionTransform().apply(colour), colour)
    out = AcquisitionTransform(gain=0.5).apply(Image.fromarray(grey))
    assert isinstance(out, Image.Image) and out.mode == "L"


def test_each_parameter_acts_as_named():
    flat = np.full((16, 16), 100, dtype=np.uint8)
    assert AcquisitionTransform(gain=2.0).apply(flat)[0, 0] == round(255 * min(1, 2 * 100 / 255))
    assert AcquisitionTransform(offset=0.1).apply(flat)[0, 0] == round(100 + 25.5)
    assert AcquisitionTransform(gamma=0.5).apply(flat)[0, 0] == round(255 * (100 / 255) ** 0.5)
    edge = np.zeros((16, 16), dtype=np.uint8)
    edge[:, 8:] = 255
    blurred = AcquisitionTransform(blur=0.1).apply(edge)
    assert 0 < blurred[0, 7] < 255 and 0 < blurred[0, 8] < 255  # the step is smoothed
    noisy = AcquisitionTransform(noise=0.05).apply(flat, np.random.default_rng(0)).astype(float)
    assert 8 < noisy.std() < 18 and abs(noisy.mean() - 100) < 3  # 0.05 * 255 = 12.75


def test_grey_stays_grey_and_colour_gets_its_cast():
    rng = np.random.default_rng(1)
    grey_rgb = Image.fromarray((rng.random((12, 12)) * 255).astype(np.uint8)).convert("RGB")
    harsh = create_protocol("default4").sites["site_d"]
    out = np.asarray(harsh.apply(grey_rgb, np.random.default_rng(0)))
    assert out.shape == (12, 12, 3) and np.array_equal(out[..., 0], out[..., 1])
    assert np.array_equal(out[..., 1], out[..., 2])
    colour = np.zeros((12, 12, 3), dtype=np.uint8) + np.array([120, 100, 80], dtype=np.uint8)
    cast = AcquisitionTransform(color=(1.2, 1.0, 0.8)).apply(colour)
    assert cast[0, 0].tolist() == [144, 100, 64]
    flat_grey = np.full((12, 12, 3), 120, dtype=np.uint8)  # equal channels: a grey image, no cast
    assert np.array_equal(AcquisitionTransform(color=(1.2, 1.0, 0.8)).apply(flat_grey), flat_grey)


def test_noise_is_reproducible_from_the_generator():
    image = np.full((10, 10, 3), 90, dtype=np.uint8)
    image[..., 2] = 10  # colour
    t = AcquisitionTransform(noise=0.05)
    a = t.apply(image, np.random.default_rng(5))
    assert np.array_equal(a, t.apply(image, np.random.default_rng(5)))
    assert not np.array_equal(a, t.apply(image, np.random.default_rng(6)))


@pytest.mark.parametrize("kwargs, word", [
    ({"gain": 0}, "gain"), ({"gamma": -1}, "gamma"), ({"blur": -0.1}, "blur"), ({"noise": -1}, "noise"),
    ({"color": (1, 1)}, "color"), ({"offset": float("nan")}, "finite"),
])
def test_bad_transform_values_are_one_line_errors(kwargs, word):
    with pytest.raises(ConfigError, match=word) as info:
        AcquisitionTransform(**kwargs)
    assert "\n" not in str(info.value)


def test_bad_images_and_missing_rng_are_one_line_errors():
    with pytest.raises(ConfigError, match="uint8"):
        AcquisitionTransform(gain=2).apply(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ConfigError, match="shape"):
        AcquisitionTransform(gain=2).apply(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(ConfigError, match="random generator"):
        AcquisitionTransform(noise=0.1).apply(np.zeros((4, 4), dtype=np.uint8))


def test_scaled_interpolates_towards_identity():
    harsh = create_protocol("default4").sites["site_d"]
    assert harsh.scaled(0).is_identity
    assert harsh.scaled(1) == harsh
    half = harsh.scaled(0.5)
    assert half.noise == pytest.approx(harsh.noise / 2) and half.gain == pytest.approx(harsh.gain ** 0.5)


# ----- protocols ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_protocols())
def test_every_registered_protocol_is_valid(name):
    protocol = create_protocol(name)
    assert protocol.held_out in protocol.sites and len(protocol.sites) >= 2
    image = np.full((8, 8, 3), 100, dtype=np.uint8)
    for transform in protocol.sites.values():
        assert transform.apply(image, np.random.default_rng(0)).dtype == np.uint8


def test_default4_goes_from_mild_to_harsh():
    protocol = create_protocol("default4")
    assert list(protocol.sites) == ["site_a", "site_b", "site_c", "site_d"] and protocol.held_out == "site_d"
    assert protocol.sites["site_a"].is_identity
    noise = [t.noise for t in protocol.sites.values()]
    blur = [t.blur for t in protocol.sites.values()]
    assert noise == sorted(noise) and blur == sorted(blur)
    with pytest.raises(RegistryError, match="default4"):
        create_protocol("nope")


# ----- simulate_sites -----------------------------------------------------------------------------------
def test_assignment_is_deterministic_balanced_and_label_stratified(small_table):
    protocol = create_protocol("default4")
    first = assign_sites(small_table, protocol, seed=0)
    assert first == assign_sites(list(reversed(small_table)), protocol, seed=0)  # order does not matter
    assert first != assign_sites(small_table, protocol, seed=1)
    counts = defaultdict(int)
    for site in first.values():
        counts[site] += 1
    assert sorted(counts.values()) == [6, 6, 6, 6]  # 24 patients over 4 sites


def test_simulated_sites_keep_patients_together_and_hold_out_one_site(tmp_path, small_table):
    table = simulate_sites(small_table, "default4", tmp_path / "sim", seed=0)
    assert len(table) == len(small_table)
    by_patient = defaultdict(set)
    for case in table:
        by_patient[case.patient].add(case.site)
    assert all(len(sites) == 1 for sites in by_patient.values())
    held = [c for c in table if c.site == "site_d"]
    assert held and all(c.split == "test" for c in held)
    assert not [c for c in table if c.split in ("train", "val") and c.site == "site_d"]
    # other sites keep the table's own splits
    for case in table:
        if case.site != "site_d":
            assert case.split == small_table.get(case.case_id).split
    case = table[0]
    assert case.extra["source_images"] == small_table[0].image and case.extra["site_protocol"] == "default4"


def test_simulation_is_deterministic_per_seed_and_lazy(tmp_path, small_table):
    a = simulate_sites(small_table, "default4", tmp_path / "a", seed=3)
    b = simulate_sites(small_table, "default4", tmp_path / "b", seed=3)
    for x, y in zip(a, b):
        assert x.site == y.site and x.split == y.split
        assert np.array_equal(np.asarray(load_image(x.image)), np.asarray(load_image(y.image)))
    stamps = {c.image: (tmp_path / "a" / c.site / c.image.split("/")[-1]).stat().st_mtime_ns for c in a}
    again = simulate_sites(small_table, "default4", tmp_path / "a", seed=3)
    assert [c.images for c in again] == [c.images for c in a]
    assert all((tmp_path / "a" / c.site / c.image.split("/")[-1]).stat().st_mtime_ns == stamps[c.image] for c in again)
    other = simulate_sites(small_table, "default4", tmp_path / "a", seed=4)
    assert [c.site for c in other] != [c.site for c in a]


def test_images_are_transformed_by_their_site(tmp_path):
    source = write_images(tmp_path / "src", n_patients=8, per_patient=1, colour=True)
    protocol = create_protocol("default4")
    table = simulate_sites(source, protocol, tmp_path / "sim", seed=0, held_out="site_b")
    assert {c.site for c in table if c.split == "test"} >= {"site_b"}
    for case in table:
        original = np.asarray(load_image(source.get(case.case_id).image))
        simulated = np.asarray(load_image(case.image))
        assert simulated.shape == original.shape
        if case.site == "site_a":
            assert np.array_equal(simulated, original)
        else:
            assert not np.array_equal(simulated, original)
            assert case.image.startswith(str(tmp_path / "sim" / case.site))


def test_split_fractions_resplit_by_patient(tmp_path, small_table):
    table = simulate_sites(small_table, "default4", tmp_path / "sim", seed=0, split_fractions=(0.5, 0.25, 0.25))
    splits = defaultdict(set)
    for case in table:
        splits[case.patient].add(case.split)
    assert all(len(s) == 1 for s in splits.values())
    seen = {c.patient for c in table if c.site != "site_d"}
    n_train = sum(1 for p in seen if splits[p] == {"train"})
    assert n_train == round(0.5 * len(seen))


def test_cases_without_patient_are_their_own_patient(tmp_path, small_table):
    from dataclasses import replace

    from seeinpairs.cases import CaseTable

    anonymous = CaseTable([replace(c, patient_id=None) for c in small_table])
    sites = assign_sites(anonymous, create_protocol("default4"), seed=0)
    assert len(sites) == len(small_table)  # one "patient" per case


@pytest.mark.parametrize("kwargs, word", [
    ({"held_out": "site_x"}, "held_out"),
    ({"split_fractions": (0.5, 0.5, 0.5)}, "split_fractions"),
    ({"image_format": "gif"}, "image_format"),
])
def test_simulate_sites_bad_arguments(tmp_path, small_table, kwargs, word):
    with pytest.raises(ConfigError, match=word) as info:
        simulate_sites(small_table, "default4", tmp_path, seed=0, **kwargs)
    assert "\n" not in str(info.value)


def test_real_nih_subset_keeps_follow_ups_of_a_patient_at_one_site(tmp_path, nih_table):
    table, _ = nih_table
    subset = [c for c in table if int(c.patient) % 4 == 0]  # about a quarter of the patients, all their images
    simulated = simulate_sites(subset, "default4", tmp_path, seed=0, split_fractions=(0.7, 0.1, 0.2))
    by_patient = defaultdict(set)
    for case in simulated:
        by_patient[case.patient].add((case.site, case.split))
    assert any(len([c for c in subset if c.patient == p]) > 1 for p in by_patient)
    assert all(len(v) == 1 for v in by_patient.values())  # one site and one split per patient
    assert all(c.split == "test" for c in simulated if c.site == "site_d")
