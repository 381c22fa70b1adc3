"""Data-set adapters: native layouts in, harmonised Cases and a Task out; one-line errors for bad input."""

from __future__ import annotations

import os
import urllib.error
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from adapter_layouts import LAYOUTS, build_chexpert, build_dicomfolder, build_nih, image, write_csv

from seeinpairs.cases import CORE_FIELDS, Case, CaseTable
from seeinpairs.datasets.medmnist import default_image_dir
from seeinpairs.datasets.registry import (DATASETS, ResplitReport, dataset_options, guess_healthy, list_datasets,
                                          load_dataset, patients_across_splits, resplit_by_patient)
from seeinpairs.errors import ConfigError, ManifestError, RegistryError
from seeinpairs.settings import DataConfig

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
STANDARD_KINDS = ("missing_column", "wrong_type", "missing_image")
KINDS = {"imagefolder": ("no_images", "unknown_healthy"), "dicomfolder": ("unreadable", "wrong_type", "unlabelled")}
CORRUPTIONS = [(layout_id, kind) for layout_id in sorted(LAYOUTS) for kind in KINDS.get(layout_id, STANDARD_KINDS)]


def build(layout_id: str, tmp_path: Path):
    _, builder = LAYOUTS[layout_id]
    root = tmp_path / layout_id
    root.mkdir(parents=True)
    return builder(root)


def value_of(case: Case, key: str):
    return getattr(case, key) if key in CORE_FIELDS else case.extra.get(key)


def assert_one_line(excinfo, *fragments: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# ---------------------------------------------------------------------------
# registry


def test_every_registered_adapter_has_a_fixture():
    assert list_datasets() == DATASETS.list_names() and len(list_datasets()) >= 11
    assert set(list_datasets()) <= {name for name, _ in LAYOUTS.values()}


@pytest.mark.parametrize("name", list_datasets())
def test_unknown_option_is_a_config_error_naming_the_known_ones(name, tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load_dataset(name, tmp_path, no_such_option=1)
    assert_one_line(excinfo, name, "no_such_option", "known:")
    assert "root" not in dataset_options(name)


def test_unknown_dataset_and_missing_folder(tmp_path):
    with pytest.raises(RegistryError, match="unknown dataset 'nope'"):
        load_dataset("nope", tmp_path)
    with pytest.raises(ManifestError) as excinfo:
        load_dataset("nih", tmp_path / "absent")
    assert_one_line(excinfo, "absent", "not found")


# ---------------------------------------------------------------------------
# every layout: mapping onto Case fields


@pytest.mark.parametrize("layout_id", sorted(LAYOUTS))
def test_adapter_maps_native_layout_onto_cases(layout_id, tmp_path):
    layout = build(layout_id, tmp_path)
    table, task = load_dataset(layout.name, layout.root, **layout.options)
    assert {c.case_id: c.label for c in table} == layout.labels
    assert task.classes == layout.classes
    assert task.healthy_class == layout.healthy
    assert {c.label for c in table} <= set(task.classes)
    for case in table:
        assert case.images and all(Path(p).is_absolute() and Path(p).is_file() for p in case.images)
        assert case.patient_id  # every case has a patient (its own id when the data set has none)
        assert case.sex in (None, "M", "F", "O")
    for case_id, expected in layout.fields.items():
        case = table.get(case_id)
        for key, value in expected.items():
            assert value_of(case, key) == value, (case_id, key)
    # the harmonised table is a valid manifest: it saves and reloads with every field intact
    table.save(tmp_path / "manifest.csv")
    config = DataConfig(manifest=tmp_path / "manifest.csv", dataset={"name": layout.name, "root": str(layout.root),
                                                                     "options": layout.options})
    reloaded = config.load_table(classes=task.classes)  # the adapter's folders are allowed image roots
    assert [(c.case_id, c.label, c.patient_id, c.sex, c.age, c.site, c.split, c.images) for c in reloaded] == \
           [(c.case_id, c.label, c.patient_id, c.sex, c.age, c.site, c.split, c.images) for c in table]


@pytest.mark.parametrize("layout_id,kind", CORRUPTIONS)
def test_malformed_input_is_one_line_naming_file_and_field(layout_id, kind, tmp_path):
    layout = build(layout_id, tmp_path)
    assert {c.kind for c in layout.corruptions} == set(KINDS.get(layout_id, STANDARD_KINDS))
    corruption = next(c for c in layout.corruptions if c.kind == kind)
    corruption.apply()
    with pytest.raises((ManifestError, ConfigError)) as excinfo:
        load_dataset(layout.name, layout.root, **layout.options)
    assert_one_line(excinfo, *corruption.fragments)


@pytest.mark.parametrize("layout_id", ["nih", "ham10000", "aptos", "odir", "mimic"])
def test_missing_drop_leaves_out_rows_without_images(layout_id, tmp_path):
    layout = build(layout_id, tmp_path)
    next(c for c in layout.corruptions if c.kind == "missing_image").apply()
    table, _ = load_dataset(layout.name, layout.root, missing="drop", **layout.options)
    assert 0 < len(table) < len(layout.labels)


# ---------------------------------------------------------------------------
# adapter options


def test_chexpert_uncertainty_policies_views_and_tasks(tmp_path):
    layout = build_chexpert(tmp_path)
    only_uncertain = "train/patient00003/study1/view1_frontal"  # Edema -1, No Finding blank
    assert only_uncertain not in layout.labels  # zeros: not a positive finding, and not called No Finding either
    ones, _ = load_dataset("chexpert", tmp_path, uncertain="ones")
    assert ones.get(only_uncertain).label == "abnormal"
    ignored, _ = load_dataset("chexpert", tmp_path, uncertain="ignore")
    assert {c.case_id: c.label for c in ignored} == layout.labels
    # the policy decides whether Cardiomegaly 1 + Edema -1 is a single-finding image
    uncertain_edema = "train/patient00004/study1/view1_frontal"
    for policy, expected in (("zeros", "cardiomegaly"), ("ones", None), ("ignore", None)):
        table, _ = load_dataset("chexpert", tmp_path, task="multiclass", uncertain=policy)
        assert {c.case_id: c.label for c in table}.get(uncertain_edema) == expected, policy
    every_view, _ = load_dataset("chexpert", tmp_path, views="all")
    lateral = every_view.get("train/patient00001/study1/view2_lateral")
    assert lateral.extra["view"] == "LATERAL" and lateral.extra["frontal"] is False
    pneumonia, task = load_dataset("chexpert", tmp_path, task="finding", finding="pneumonia")
    assert task.classes == ["normal", "pneumonia"] and task.healthy_class == "normal"
    assert {c.case_id: c.label for c in pneumonia} == {
        "train/patient00001/study1/view1_frontal": "normal", "train/patient00002/study2/view1_frontal": "pneumonia",
    }  # images with other findings only are left out
    multi, task = load_dataset("chexpert", tmp_path, task="multiclass")
    assert task.classes[0] == "normal" and "cardiomegaly" in task.classes
    assert multi.get("valid/patient64541/study1/view1_frontal").label == "cardiomegaly"
    assert "train/patient00002/study2/view1_frontal" not in {c.case_id for c in multi}  # two findings
    with pytest.raises(ConfigError, match="finding="):
        load_dataset("chexpert", tmp_path, task="finding")
    with pytest.raises(ConfigError, match="'Rib' is not a finding"):
        load_dataset("chexpert", tmp_path, task="finding", finding="Rib")
    with pytest.raises(ConfigError, match="uncertain"):
        load_dataset("chexpert", tmp_path, uncertain="maybe")


def test_nih_tasks_and_unknown_finding(tmp_path):
    build_nih(tmp_path)
    table, task = load_dataset("nih", tmp_path, task="finding", finding="Cardiomegaly")
    assert task.classes == ["normal", "cardiomegaly"]
    assert {c.case_id: c.label for c in table} == {"00000001_000": "cardiomegaly", "00000001_001": "normal",
                                                   "00000002_000": "normal"}
    table, task = load_dataset("nih", tmp_path, task="multiclass")
    assert table.get("00000003_000").label == "hernia" and "00000001_000" not in {c.case_id for c in table}
    no_lists, _ = load_dataset("nih", tmp_path, split_lists=False)
    assert {c.split for c in no_lists} == {None}
    path = tmp_path / "Data_Entry_2017_v2020.csv"
    path.write_text(path.read_text().replace("Hernia", "Hernia|Dragons"))
    with pytest.raises(ManifestError) as excinfo:
        load_dataset("nih", tmp_path)
    assert_one_line(excinfo, "row 4", "Finding Labels", "Dragons")


def test_resplit_by_patient_removes_leaks_and_reports_moves():
    def case(i, patient, split):
        return Case(case_id=f"c{i}", images=(f"/x/{i}.png",), label="normal", patient_id=patient, split=split)

    table = CaseTable([case(0, "p1", "train"), case(1, "p1", "train"), case(2, "p1", "test"), case(3, "p2", "val"),
                       case(4, "p3", "test"), case(5, "p3", "val")])
    assert patients_across_splits(table) == ["p1", "p3"]
    fixed, report = resplit_by_patient(table)
    assert isinstance(report, ResplitReport)
    assert patients_across_splits(fixed) == []
    assert [c.split for c in fixed] == ["train", "train", "train", "val", "val", "val"]  # tie p3 -> val (listed first)
    assert (report.patients_moved, report.cases_moved) == (2, 2)
    assert report.patients_across_splits_before == 2 and report.patients_across_splits_after == 0
    assert "2 patients (2 cases) moved" in str(report)
    random_split, report = resplit_by_patient(table, {"train": 0.5, "test": 0.5}, seed=3)
    assert patients_across_splits(random_split) == [] and set(report.split_sizes) <= {"train", "test"}
    again, _ = resplit_by_patient(table, {"train": 0.5, "test": 0.5}, seed=3)
    assert [c.split for c in again] == [c.split for c in random_split]
    with pytest.raises(ConfigError):
        resplit_by_patient(table, (-1, 2))


def test_ham10000_binary_tasks_and_path_column(tmp_path):
    layout = LAYOUTS["ham10000"][1](tmp_path)
    table, task = load_dataset("ham10000", layout.root, task="benign_malignant")
    assert task.classes == ["benign", "malignant"] and task.healthy_class == "benign"
    assert table.get("ISIC_0031633").label == "malignant" and table.get("ISIC_0026769").label == "benign"
    table, task = load_dataset("ham10000", layout.root, task="nv_vs_other")
    assert Counter(c.label for c in table) == {"nv": 1, "other": 3}
    assert "choice" in task.descriptions["nv"]
    # the shared subset's layout: metadata.csv with a path column
    write_csv(tmp_path / "subset" / "metadata.csv", ["lesion_id", "image_id", "dx", "dx_type", "age", "sex",
                                                      "localization", "dataset", "path", "md5"],
              [["HAM_1", "ISIC_1", "df", "histo", "40.0", "female", "trunk", "rosendahl", "images/ISIC_1.jpg", "x"],
               ["HAM_2", "ISIC_2", "vasc", "consensus", "35.0", "male", "face", "vienna_dias", "images/ISIC_2.jpg", "x"]])
    for i, name in enumerate(["ISIC_1", "ISIC_2"]):
        image(tmp_path / "subset" / "images" / f"{name}.jpg", seed=i, rgb=True)
    table, _ = load_dataset("ham10000", tmp_path / "subset")
    assert {c.site for c in table} == {"rosendahl", "vienna_dias"} and table.get("ISIC_2").extra["body_site"] == "face"


def test_aptos_grade_and_eyepacs_test_solution(tmp_path):
    layout = LAYOUTS["eyepacs"][1](tmp_path)
    write_csv(layout.root / "retinopathy_solution.csv", ["image", "level", "Usage"], [["1_left", 4, "Private"]])
    image(layout.root / "test" / "1_left.jpeg", seed=9, rgb=True)
    table, task = load_dataset("aptos", layout.root)
    assert task.classes == [f"grade {g}" for g in range(5)] and task.healthy_class == "grade 0"
    assert table.get("1_left").split == "test" and table.get("1_left").label == "grade 4"
    assert table.get("1_left").patient_id == "1" and table.get("10_left").split == "train"
    assert "proliferative" in task.descriptions["grade 4"] and task.descriptions["grade 0"] == "no diabetic retinopathy"


def test_odir_bilateral_cases_hold_both_eyes(tmp_path):
    layout = LAYOUTS["odir_bilateral"][1](tmp_path)
    table, task = load_dataset("odir", layout.root, **layout.options)
    case = table.get("0")
    assert len(case.images) == 2 and case.images[0].endswith("0_left.jpg") and case.images[1].endswith("0_right.jpg")
    assert case.extra["left_keywords"] == "cataract" and "two fundus" in task.question


def test_imagefolder_flat_layout_rename_and_healthy_guess(tmp_path):
    for i, (cls, name) in enumerate([("0_normal", "a.png"), ("1_abnormal", "b.png"), ("1_abnormal", "c.tif")]):
        image(tmp_path / cls / name, seed=i)
    table, task = load_dataset("imagefolder", tmp_path)
    assert task.healthy_class == "0_normal" and task.classes == ["0_normal", "1_abnormal"]
    assert {c.split for c in table} == {None} and len(table) == 3
    table, task = load_dataset("imagefolder", tmp_path, rename={"0_normal": "normal", "1_abnormal": "abnormal"},
                               extensions=[".png"])
    assert task.classes == ["normal", "abnormal"] and len(table) == 2
    with pytest.raises(ConfigError, match="'healthy' is not one of"):
        load_dataset("imagefolder", tmp_path, healthy_class="healthy")
    assert guess_healthy(["No_Finding", "Pneumonia"]) == "No_Finding"
    assert guess_healthy(["abnormal", "lesion"]) is None


def test_dicomfolder_labels_from_csv(tmp_path):
    layout = build_dicomfolder(tmp_path)
    uids = list(layout.labels)
    write_csv(tmp_path / "labels.csv", ["SOPInstanceUID", "label", "split"],
              [[uids[0], "normal", "train"], [uids[1], "nodule", "test"], [uids[2], "nodule", "test"]])
    table, task = load_dataset("dicomfolder", tmp_path, labels_csv="labels.csv", healthy_class="normal")
    assert {c.case_id: (c.label, c.split) for c in table} == {uids[0]: ("normal", "train"),
                                                                uids[1]: ("nodule", "test"),
                                                                uids[2]: ("nodule", "test")}
    assert task.modality == "x-ray"
    table, _ = load_dataset("dicomfolder", tmp_path, folder_level=-1, unlabelled="drop", site_tag="Modality",
                            healthy_class="study")
    assert table.get(uids[0]).label == "study" and table.get(uids[0]).site == "DX"
    write_csv(tmp_path / "partial.csv", ["SOPInstanceUID", "label"], [[uids[0], "normal"], [uids[1], "nodule"]])
    with pytest.raises(ManifestError) as excinfo:
        load_dataset("dicomfolder", tmp_path, labels_csv="partial.csv")
    assert_one_line(excinfo, "1 DICOM file(s) have no label", "partial.csv")


# ---------------------------------------------------------------------------
# MedMNIST specifics


def _npz(path: Path, labels: dict[str, list], channels: int = 0, multilabel: int = 0) -> Path:
    rng = np.random.default_rng(1)
    arrays = {}
    for split, values in labels.items():
        shape = (len(values), 28, 28) + ((channels,) if channels else ())
        arrays[f"{split}_images"] = (rng.random(shape) * 255).astype(np.uint8)
        arrays[f"{split}_labels"] = np.array(values, dtype=np.uint8).reshape(len(values), -1 if multilabel else 1)
    arrays["extra_key"] = np.arange(3)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def test_medmnist_png_cache_is_written_once_and_refreshed_when_the_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("SEEINPAIRS_CACHE", str(tmp_path / "cache"))
    _npz(tmp_path / "pneumoniamnist_64.npz", {"train": [0, 1], "val": [0], "test": [1]})
    table, task = load_dataset("medmnist", tmp_path, flag="pneumoniamnist", size=64)
    assert task.classes == ["normal", "pneumonia"] and task.healthy_class == "normal"
    first = Path(table.get("pneumoniamnist_train_000001").image)
    assert first.parent == default_image_dir(tmp_path / "pneumoniamnist_64.npz")
    assert first.parent.is_relative_to(tmp_path / "cache")  # never beside the user's data
    stamp = first.stat().st_mtime_ns
    os.utime(first, ns=(stamp - 10**9, stamp - 10**9))
    load_dataset("medmnist", tmp_path, flag="pneumonia", size=64)
    assert first.stat().st_mtime_ns == stamp - 10**9  # not rewritten
    _npz(tmp_path / "pneumoniamnist_64.npz", {"train": [1, 0, 1], "val": [0], "test": [1]})
    table, _ = load_dataset("medmnist", tmp_path, flag="pneumonia", size=64, splits=["train"])
    assert first.stat().st_mtime_ns != stamp - 10**9 and len(table) == 3 and table.splits == ["train"]


def test_medmnist_chest_is_any_finding_and_rgb_flags(tmp_path):
    labels = [[0] * 14, [1] + [0] * 5 + [1] + [0] * 7]
    _npz(tmp_path / "chestmnist.npz", {"train": labels, "val": labels, "test": labels}, multilabel=14)
    table, task = load_dataset("medmnist", tmp_path / "chestmnist.npz")
    assert task.classes == ["normal", "abnormal"]
    assert table.get("chestmnist_val_000001").extra["findings"] == "atelectasis|pneumonia"
    assert table.get("chestmnist_val_000000").label == "normal"
    _npz(tmp_path / "dermamnist.npz", {"train": [5, 4], "val": [0], "test": [6]}, channels=3)
    table, task = load_dataset("medmnist", tmp_path, flag="derma", image_dir=tmp_path / "cache")
    assert task.healthy_class == "nv" and table.get("dermamnist_train_000001").label == "mel"
    assert "choice" in task.descriptions["nv"]


def test_medmnist_flags_without_healthy_class_and_bad_options(tmp_path):
    _npz(tmp_path / "bloodmnist.npz", {"train": [0, 7], "val": [1], "test": [2]}, channels=3)
    with pytest.raises(ConfigError, match="no healthy class"):
        load_dataset("medmnist", tmp_path, flag="blood")
    table, task = load_dataset("medmnist", tmp_path, flag="blood", healthy_class="neutrophil")
    assert task.healthy_class == "neutrophil" and table.get("bloodmnist_train_000001").label == "platelet"
    with pytest.raises(ConfigError, match="unknown flag"):
        load_dataset("medmnist", tmp_path, flag="brain3d")
    with pytest.raises(ConfigError, match="size"):
        load_dataset("medmnist", tmp_path, flag="blood", size=32)
    _npz(tmp_path / "octmnist.npz", {"train": [0, 4], "val": [1], "test": [2]})
    with pytest.raises(ManifestError) as excinfo:
        load_dataset("medmnist", tmp_path, flag="oct")
    assert_one_line(excinfo, "octmnist.npz", "train_labels", "row 2", "label 4")


def test_medmnist_download_is_explicit_and_fails_in_one_line_without_network(tmp_path, monkeypatch):
    with pytest.raises(ManifestError) as excinfo:
        load_dataset("medmnist", tmp_path, flag="retina")
    assert_one_line(excinfo, "retinamnist.npz", "download=True", "zenodo")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(ManifestError) as excinfo:
        load_dataset("medmnist", tmp_path / "new", flag="retina", size=128, download=True)
    assert_one_line(excinfo, "retinamnist_128.npz", "cannot download", "name resolution")
    assert not any((tmp_path / "new").glob("*.part"))


# ---------------------------------------------------------------------------
# the shared real data sets (../shared/data)

needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared data folder {SHARED_DATA} is absent")


@pytest.fixture(scope="session")
def png_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("medmnist_png")


@needs_shared
def test_shared_pneumoniamnist_balanced(png_cache):
    table, task = load_dataset("medmnist", SHARED_DATA / "pneumoniamnist" / "pneumoniamnist_balanced.npz",
                               image_dir=png_cache / "pneumonia")
    assert task.name == "pneumoniamnist" and task.healthy_class == "normal"
    sizes = Counter(c.split for c in table)
    assert (sizes["train"], sizes["val"], sizes["test"]) == (2428, 270, 468)
    for split in ("train", "val", "test"):
        labels = Counter(c.label for c in table.filter(split=split))
        assert labels["normal"] == labels["pneumonia"]  # balanced 50/50 per split
    assert len({c.patient for c in table}) == len(table)


@needs_shared
def test_shared_retinamnist(png_cache):
    table, task = load_dataset("medmnist", SHARED_DATA / "retinamnist", flag="retina", image_dir=png_cache / "retina")
    sizes = Counter(c.split for c in table)
    assert (sizes["train"], sizes["val"], sizes["test"]) == (1080, 120, 400)
    test_grades = Counter(c.label for c in table.filter(split="test"))
    assert [test_grades[f"grade {g}"] for g in range(5)] == [174, 46, 92, 68, 20]
    assert task.healthy_class == "grade 0"


@needs_shared
def test_shared_nih_1000_and_patient_resplit():
    table, task = load_dataset("nih", SHARED_DATA / "nih_cxr14_nih1000")
    assert len(table) == 1000 and len({c.patient for c in table}) == 264
    assert task.classes == ["normal", "abnormal"]
    assert {c.extra["view"] for c in table} <= {"PA", "AP"} and {c.sex for c in table} == {"M", "F"}
    assert all(c.age is not None for c in table)
    mislabelled = table.get("00000193_019")  # normal by folder, Pneumonia in NIH's table
    assert mislabelled.label == "normal" and mislabelled.extra["findings"] == "pneumonia"
    assert len(patients_across_splits(table)) == 30  # the folder split leaks 30 patients
    fixed, report = resplit_by_patient(table)
    assert patients_across_splits(fixed) == [] and report.patients_across_splits_after == 0
    assert report.patients_moved == 30 and len(fixed) == 1000


@needs_shared
def test_shared_ham10000_subset():
    table, task = load_dataset("ham10000", SHARED_DATA / "ham10000_subset")
    assert len(table) == 3000 and task.healthy_class == "nv"
    assert Counter(c.site for c in table) == {"vidir_molemax": 1100, "rosendahl": 960, "vidir_modern": 837,
                                              "vienna_dias": 103}
    assert Counter(c.label for c in table) == {"nv": 1339, "bkl": 583, "mel": 491, "bcc": 264, "akiec": 183,
                                               "vasc": 80, "df": 60}
    assert len({c.patient for c in table}) == 3000  # one image per lesion
    assert all("localization" in c.extra for c in table)


def test_registered_loaders_accept_str_roots_and_return_absolute_paths(tmp_path, monkeypatch):
    layout = LAYOUTS["aptos"][1](tmp_path)
    monkeypatch.chdir(tmp_path.parent)
    table, _ = DATASETS.get("aptos")(tmp_path.name)
    assert all(Path(c.image).is_absolute() for c in table) and len(table) == len(layout.labels)


def test_isic2020_diagnosis_and_fitzpatrick_healthy_choice(tmp_path):
    layout = LAYOUTS["isic2020"][1](tmp_path / "isic")
    table, task = load_dataset("isic", layout.root, task="diagnosis")
    assert task.classes == ["nevus", "melanoma", "unknown"] and task.healthy_class == "nevus"
    layout = LAYOUTS["fitzpatrick"][1](tmp_path / "fitz")
    _, task = load_dataset("fitzpatrick", layout.root)
    assert "choice" in task.descriptions["benign"]
    _, task = load_dataset("fitzpatrick", layout.root, healthy_class="non-neoplastic")
    assert task.healthy_class == "non-neoplastic" and "choice" not in task.descriptions["benign"]
    with pytest.raises(ConfigError, match="healthy_class"):  # no 'benign melanocyte' image in this fixture
        load_dataset("fitzpatrick", layout.root, task="nine")
    table, task = load_dataset("fitzpatrick", layout.root, task="nine", healthy_class="benign dermal")
    assert task.classes == ["benign dermal", "inflammatory", "malignant melanoma"]
    assert table.get("0a94359e7eaacd7178e06b2823777789").label == "malignant melanoma"
