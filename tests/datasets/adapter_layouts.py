"""Tiny fixtures of public data sets in their real layouts (column names, file naming, folders).

Each ``build_*`` writes a few rows and tiny images under a folder and returns a
:class:`Layout` saying how to load it, what the adapter must produce, and how
to break it (a missing column, a value of the wrong type, a missing image).
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from PIL import Image


@dataclass
class Corruption:
    kind: str                      # missing_column | wrong_type | missing_image | ...
    apply: Callable[[], None]
    fragments: tuple[str, ...]     # must all appear in the one-line error


@dataclass
class Layout:
    name: str                      # registry name
    root: Path
    options: dict[str, Any]
    labels: dict[str, str]         # case_id -> label (exactly the cases expected)
    classes: list[str]
    healthy: str
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)  # case_id -> {field or extra key: value}
    corruptions: list[Corruption] = field(default_factory=list)


# ---------------------------------------------------------------------------
# writing helpers


def image(path: Path, seed: int = 0, size: int = 8, rgb: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if rgb else (size, size)
    array = (rng.random(shape) * 255).astype(np.uint8)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(array).save(path, format=fmt)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)]
    for row in rows:
        cells = ["" if v is None else str(v) for v in row]
        lines.append(",".join(f'"{c}"' if ("," in c or '"' in c) else c for c in cells))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _write(frame: pd.DataFrame, path: Path) -> None:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    data = buffer.getvalue().encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def drop_column(path: Path, column: str) -> Callable[[], None]:
    def apply() -> None:
        frame = _read(path)
        _write(frame.drop(columns=[column]), path)
    return apply


def set_cell(path: Path, row: int, column: str, value: str) -> Callable[[], None]:
    """``row`` is 1-based among data rows, as the adapters report it."""
    def apply() -> None:
        frame = _read(path)
        frame.loc[row - 1, column] = value
        _write(frame, path)
    return apply


def delete(path: Path) -> Callable[[], None]:
    return lambda: path.unlink()


def standard(path: Path, column: str, wrong_row: int, wrong_column: str, wrong_value: str,
             missing_image: Path) -> list[Corruption]:
    return [
        Corruption("missing_column", drop_column(path, column), (path.name, column)),
        Corruption("wrong_type", set_cell(path, wrong_row, wrong_column, wrong_value),
                   (path.name, f"row {wrong_row}", wrong_column, wrong_value)),
        Corruption("missing_image", delete(missing_image), (path.name, missing_image.stem)),
    ]


# ---------------------------------------------------------------------------
# layouts


def build_medmnist(root: Path) -> Layout:
    rng = np.random.default_rng(0)
    arrays = {}
    labels = {"train": [0, 1, 1], "val": [1], "test": [0, 1]}
    for split, values in labels.items():
        arrays[f"{split}_images"] = (rng.random((len(values), 28, 28)) * 255).astype(np.uint8)
        arrays[f"{split}_labels"] = np.array(values, dtype=np.uint8).reshape(-1, 1)
    path = root / "breastmnist.npz"
    np.savez(path, **arrays)
    names = {0: "malignant", 1: "normal/benign"}
    expected = {f"breastmnist_{s}_{i:06d}": names[v] for s, vs in labels.items() for i, v in enumerate(vs)}

    def drop_key() -> None:
        np.savez(path, **{k: v for k, v in arrays.items() if k != "val_labels"})

    def float_labels() -> None:
        np.savez(path, **{**arrays, "test_labels": np.array([[0.5], [1.0]])})

    return Layout(
        "medmnist", root, {"flag": "breast"}, expected, ["normal/benign", "malignant"], "normal/benign",
        fields={"breastmnist_train_000001": {"patient_id": "breastmnist_train_000001", "split": "train"}},
        corruptions=[Corruption("missing_column", drop_key, (path.name, "val_labels")),
                     Corruption("wrong_type", float_labels, (path.name, "test_labels", "float")),
                     Corruption("missing_image", delete(path), (path.name, "not found"))])


CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
                   "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia",
                   "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"]


def _chexpert_row(path: str, sex: str, age: Any, view: str, ap_pa: str, **labels: Any) -> list[Any]:
    values = {c: "" for c in CHEXPERT_HEADER[5:]}
    values.update({k.replace("_", " "): v for k, v in labels.items()})
    return [path, sex, age, view, ap_pa, *values.values()]


def build_chexpert(root: Path) -> Layout:
    base = root / "CheXpert-v1.0-small"
    train = [
        _chexpert_row("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "Female", 68, "Frontal",
                      "AP", No_Finding="1.0", Support_Devices="1.0"),
        _chexpert_row("CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg", "Female", 68, "Lateral",
                      "", No_Finding="1.0"),
        _chexpert_row("CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg", "Male", 45, "Frontal",
                      "PA", Pneumonia="1.0", Lung_Opacity="1.0", No_Finding=""),
        _chexpert_row("CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg", "Unknown", 0, "Frontal",
                      "AP", Edema="-1.0", Cardiomegaly="0.0"),
        _chexpert_row("CheXpert-v1.0-small/train/patient00004/study1/view1_frontal.jpg", "Female", 20, "Frontal",
                      "PA", Cardiomegaly="1.0", Edema="-1.0"),
    ]
    valid = [_chexpert_row("CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", "Male", 73,
                           "Frontal", "AP", Cardiomegaly="1.0", No_Finding="0.0")]
    for i, row in enumerate(train + valid):
        image(root / row[0], seed=i)
    train_csv = write_csv(base / "train.csv", CHEXPERT_HEADER, train)
    write_csv(base / "valid.csv", CHEXPERT_HEADER, valid)
    return Layout(
        "chexpert", root, {},
        {"train/patient00001/study1/view1_frontal": "normal", "train/patient00002/study2/view1_frontal": "abnormal",
         "train/patient00004/study1/view1_frontal": "abnormal", "valid/patient64541/study1/view1_frontal": "abnormal"},
        ["normal", "abnormal"], "normal",
        fields={"train/patient00002/study2/view1_frontal": {"patient_id": "patient00002", "sex": "M", "age": 45.0,
                                                            "split": "train", "view": "PA",
                                                            "findings": "lung opacity|pneumonia"},
                "train/patient00004/study1/view1_frontal": {"sex": "F", "uncertain": "edema",
                                                            "findings": "cardiomegaly"},
                "valid/patient64541/study1/view1_frontal": {"split": "val", "patient_id": "patient64541"}},
        corruptions=standard(train_csv, "Frontal/Lateral", 3, "Pneumonia", "yes",
                             root / train[0][0]))


NIH_HEADER = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position," \
             "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"


def build_nih(root: Path) -> Layout:
    rows = [
        ["00000001_000.png", "Cardiomegaly|Emphysema", 0, 1, 57, "M", "PA", 2682, 2749, 0.143, 0.143],
        ["00000001_001.png", "No Finding", 1, 1, 58, "M", "PA", 2894, 2729, 0.143, 0.143],
        ["00000002_000.png", "No Finding", 0, 2, 81, "F", "AP", 2500, 2048, 0.171, 0.171],
        ["00000003_000.png", "Hernia", 0, 3, 413, "F", "PA", 2582, 2905, 0.143, 0.143],
    ]
    for i, row in enumerate(rows):
        image(root / f"images_00{i % 2 + 1}" / "images" / row[0], seed=i)
    path = root / "Data_Entry_2017_v2020.csv"
    path.write_text(NIH_HEADER + "\n" + "\n".join(",".join(map(str, r)) + "," for r in rows) + "\n")
    (root / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000003_000.png\n")
    (root / "test_list.txt").write_text("00000002_000.png\n")
    return Layout(
        "nih", root, {},
        {"00000001_000": "abnormal", "00000001_001": "normal", "00000002_000": "normal", "00000003_000": "abnormal"},
        ["normal", "abnormal"], "normal",
        fields={"00000001_000": {"patient_id": "00000001", "age": 57.0, "sex": "M", "view": "PA", "split": "train",
                                 "findings": "cardiomegaly|emphysema", "follow_up": 0},
                "00000002_000": {"patient_id": "00000002", "sex": "F", "view": "AP", "split": "test"},
                "00000003_000": {"age": None, "age_raw": "413"}},
        corruptions=standard(path, "Patient Gender", 2, "Patient Age", "fifty",
                             root / "images_001" / "images" / "00000002_000.png"))


def build_nih_shared(root: Path) -> Layout:
    """The layout of the shared nih_cxr14_nih1000 folder (metadata.csv with path/split/label)."""
    header = ["image_index", "split", "folder_label", "label", "path", "md5", "finding_labels", "follow_up",
              "patient_id", "patient_age", "patient_sex", "view_position", "orig_width", "orig_height",
              "pixel_spacing_x", "pixel_spacing_y", "no_finding", "label_agrees_with_data_entry",
              "n_images_of_patient_in_subset", "n_images_of_patient_in_data_entry"]
    rows = [
        ["00000231_013.png", "test", "0_normal", 0, "images/test/0_normal/00000231_013.png", "x", "No Finding",
         13, 231, 56, "F", "PA", 2992, 2991, 0.143, 0.143, 1, 1, 2, 14],
        ["00000231_014.png", "train", "1_abnormal", 1, "images/train/1_abnormal/00000231_014.png", "x",
         "Effusion", 14, 231, 56, "F", "PA", 2992, 2991, 0.143, 0.143, 0, 1, 2, 14],
        ["00000193_019.png", "valid", "0_normal", 0, "images/valid/0_normal/00000193_019.png", "x", "Pneumonia",
         19, 193, 40, "M", "AP", 2500, 2048, 0.168, 0.168, 0, 0, 1, 20],
    ]
    for i, row in enumerate(rows):
        image(root / row[4], seed=i)
    path = write_csv(root / "metadata.csv", header, rows)
    return Layout(
        "nih", root, {}, {"00000231_013": "normal", "00000231_014": "abnormal", "00000193_019": "normal"},
        ["normal", "abnormal"], "normal",
        fields={"00000231_013": {"patient_id": "00000231", "split": "test", "age": 56.0, "sex": "F"},
                "00000193_019": {"split": "val", "findings": "pneumonia"}},
        corruptions=standard(path, "patient_id", 1, "label", "abnormal", root / rows[1][4]))


MIMIC_META = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
              "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
              "PatientOrientationCodeSequence_CodeMeaning"]
MIMIC_LABELS = ["subject_id", "study_id", "Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
                "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion", "Lung Opacity", "No Finding",
                "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices"]


def build_mimic(root: Path) -> Layout:
    dicoms = [
        ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", 10000032, 50414267, "PA", "CHEST (PA AND LAT)"),
        ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", 10000032, 50414267, "LATERAL", "CHEST (PA AND LAT)"),
        ("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", 10000764, 57375967, "AP", "CHEST (PORTABLE AP)"),
        ("68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714", 10000935, 50578979, "PA", "CHEST (PA AND LAT)"),
    ]
    meta = [[d, s, st, desc, v, 3056, 2544, 21800506, 213014.531, "CHEST (PA AND LAT)", "postero-anterior", "Erect"]
            for d, s, st, v, desc in dicoms]
    meta_path = write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", MIMIC_META, meta)
    empty = {c: "" for c in MIMIC_LABELS[2:]}
    study_rows = [
        [10000032, 50414267, *{**empty, "No Finding": "1.0"}.values()],
        [10000764, 57375967, *{**empty, "Consolidation": "1.0", "Pneumonia": "-1.0"}.values()],
        [10000935, 50578979, *empty.values()],  # nothing labelled: neither normal nor abnormal
    ]
    labels_path = write_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", MIMIC_LABELS, study_rows)
    write_csv(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"],
              [[d, st, s, "train" if s == 10000032 else "validate"] for d, s, st, _, _ in dicoms])
    write_csv(root / "patients.csv", ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
              [[10000032, "F", 52, 2180, "2014 - 2016", ""], [10000764, "M", 86, 2132, "2014 - 2016", ""],
               [10000935, "F", 76, 2187, "2008 - 2010", "2189-07-15"]])
    paths = []
    for i, (d, s, st, _, _) in enumerate(dicoms):
        paths.append(image(root / "files" / f"p{str(s)[:2]}" / f"p{s}" / f"s{st}" / f"{d}.jpg", seed=i))
    return Layout(
        "mimic", root, {}, {dicoms[0][0]: "normal", dicoms[2][0]: "abnormal"}, ["normal", "abnormal"], "normal",
        fields={dicoms[0][0]: {"patient_id": "10000032", "split": "train", "view": "PA", "sex": "F", "age": 52.0,
                               "study_id": "50414267"},
                dicoms[2][0]: {"split": "val", "findings": "consolidation", "uncertain": "pneumonia", "sex": "M"}},
        corruptions=[Corruption("missing_column", drop_column(meta_path, "ViewPosition"),
                                (meta_path.name, "ViewPosition")),
                     Corruption("wrong_type", set_cell(labels_path, 2, "Consolidation", "positive"),
                                (labels_path.name, "row 2", "Consolidation", "positive")),
                     Corruption("missing_image", delete(paths[2]), (meta_path.name, "row 3", dicoms[2][0]))])


HAM_HEADER = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset"]


def build_ham10000(root: Path) -> Layout:
    rows = [
        ["HAM_0000118", "ISIC_0027419", "bkl", "histo", "80.0", "male", "scalp", "vidir_modern"],
        ["HAM_0000118", "ISIC_0025030", "bkl", "histo", "80.0", "male", "scalp", "vidir_modern"],
        ["HAM_0002730", "ISIC_0026769", "nv", "follow_up", "", "unknown", "back", "vidir_molemax"],
        ["HAM_0001466", "ISIC_0031633", "mel", "histo", "75.0", "female", "lower extremity", "rosendahl"],
    ]
    for i, row in enumerate(rows):
        image(root / f"HAM10000_images_part_{i % 2 + 1}" / f"{row[1]}.jpg", seed=i, rgb=True)
    path = write_csv(root / "HAM10000_metadata.csv", HAM_HEADER, rows)
    return Layout(
        "ham10000", root, {}, {r[1]: r[2] for r in rows}, ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"], "nv",
        fields={"ISIC_0025030": {"patient_id": "HAM_0000118", "site": "vidir_modern", "age": 80.0, "sex": "M",
                                 "localization": "scalp"},
                "ISIC_0026769": {"age": None, "sex": None, "site": "vidir_molemax"}},
        corruptions=standard(path, "dx", 4, "age", "old", root / "HAM10000_images_part_2" / "ISIC_0025030.jpg"))


def build_isic2019(root: Path) -> Layout:
    classes = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    items = [("ISIC_0000000", "NV", "55.0", "anterior torso", "", "female"),
             ("ISIC_0000002", "MEL", "60.0", "upper extremity", "", "female"),
             ("ISIC_0000004_downsampled", "MEL", "", "", "MSK4_0011169", ""),
             ("ISIC_0053494", "SCC", "70.0", "head/neck", "BCN_0003925", "male")]
    truth = [[name, *["1.0" if c == dx else "0.0" for c in classes]] for name, dx, *_ in items]
    truth_path = write_csv(root / "ISIC_2019_Training_GroundTruth.csv", ["image", *classes], truth)
    write_csv(root / "ISIC_2019_Training_Metadata.csv", ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"],
              [[n, a, s, lid, sex] for n, _, a, s, lid, sex in items])
    for i, (name, *_) in enumerate(items):
        image(root / "ISIC_2019_Training_Input" / f"{name}.jpg", seed=i, rgb=True)
    return Layout(
        "isic", root, {}, {n: dx.lower() for n, dx, *_ in items},
        ["mel", "nv", "bcc", "ak", "bkl", "df", "vasc", "scc"], "nv",
        fields={"ISIC_0053494": {"patient_id": "BCN_0003925", "age": 70.0, "sex": "M", "anatom_site": "head/neck"},
                "ISIC_0000000": {"patient_id": "ISIC_0000000", "sex": "F"}},
        corruptions=standard(truth_path, "NV", 2, "MEL", "yes",
                             root / "ISIC_2019_Training_Input" / "ISIC_0000002.jpg"))


def build_isic2020(root: Path) -> Layout:
    header = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge", "diagnosis",
              "benign_malignant", "target"]
    rows = [["ISIC_2637011", "IP_7279968", "male", "45.0", "head/neck", "unknown", "benign", 0],
            ["ISIC_0015719", "IP_3075186", "female", "45.0", "upper extremity", "unknown", "benign", 0],
            ["ISIC_0149568", "IP_0962375", "female", "55.0", "upper extremity", "melanoma", "malignant", 1],
            ["ISIC_0052212", "IP_2842074", "female", "50.0", "lower extremity", "nevus", "benign", 0]]
    path = write_csv(root / "train.csv", header, rows)
    for i, row in enumerate(rows):
        image(root / "train" / f"{row[0]}.jpg", seed=i, rgb=True)
    return Layout(
        "isic", root, {}, {r[0]: r[6] for r in rows}, ["benign", "malignant"], "benign",
        fields={"ISIC_0149568": {"patient_id": "IP_0962375", "sex": "F", "age": 55.0,
                                 "anatom_site": "upper extremity", "diagnosis": "melanoma"}},
        corruptions=standard(path, "target", 3, "target", "malignant", root / "train" / "ISIC_0052212.jpg"))


def build_fitzpatrick(root: Path) -> Layout:
    header = ["md5hash", "fitzpatrick_scale", "fitzpatrick_centaur", "label", "nine_partition_label",
              "three_partition_label", "qc", "url", "url_alphanum"]
    rows = [
        ["5e82a45bc5d78bd24ae9202d194423f8", 3, 3, "drug induced pigmentary changes", "inflammatory",
         "non-neoplastic", "", "https://www.dermaamin.com/site/images/clinical-pic/d/drug1.jpg", "x"],
        ["fa2911a9b13b6f8af79cb700937cc14f", 1, 1, "photodermatoses", "inflammatory", "non-neoplastic", "",
         "https://www.dermaamin.com/site/images/clinical-pic/p/photo1.jpg", "x"],
        ["d2bac3c9e4499032ca8e9b07c7d3bc40", 2, 3, "dermatofibroma", "benign dermal", "benign", "",
         "http://atlasdermatologico.com.br/img?imageId=3", "x"],
        ["0a94359e7eaacd7178e06b2823777789", -1, 4, "melanoma", "malignant melanoma", "malignant", "",
         "http://atlasdermatologico.com.br/img?imageId=8", "x"],
    ]
    path = write_csv(root / "fitzpatrick17k.csv", header, rows)
    for i, row in enumerate(rows):
        image(root / "images" / f"{row[0]}.jpg", seed=i, rgb=True)
    return Layout(
        "fitzpatrick", root, {}, {r[0]: r[5] for r in rows}, ["benign", "malignant", "non-neoplastic"], "benign",
        fields={rows[0][0]: {"fitzpatrick": 3, "site": "dermaamin", "condition": "drug induced pigmentary changes"},
                rows[3][0]: {"site": "atlasdermatologico", "fitzpatrick": None}},
        corruptions=standard(path, "three_partition_label", 2, "fitzpatrick_scale", "V",
                             root / "images" / f"{rows[1][0]}.jpg"))


def build_aptos(root: Path) -> Layout:
    rows = [["000c1434d8d7", 2], ["001639a390f0", 4], ["0024cdab0c1e", 1], ["002c21358ce6", 0]]
    path = write_csv(root / "train.csv", ["id_code", "diagnosis"], rows)
    for i, row in enumerate(rows):
        image(root / "train_images" / f"{row[0]}.png", seed=i, rgb=True)
    return Layout(
        "aptos", root, {}, {r[0]: f"grade {r[1]}" for r in rows}, [f"grade {g}" for g in range(5)], "grade 0",
        fields={"000c1434d8d7": {"patient_id": "000c1434d8d7", "grade": 2}},
        corruptions=standard(path, "diagnosis", 3, "diagnosis", "mild", root / "train_images" / "0024cdab0c1e.png"))


def build_eyepacs(root: Path) -> Layout:
    rows = [["10_left", 0], ["10_right", 0], ["13_left", 2], ["13_right", 3]]
    path = write_csv(root / "trainLabels.csv", ["image", "level"], rows)
    for i, row in enumerate(rows):
        image(root / "train" / f"{row[0]}.jpeg", seed=i, rgb=True)
    return Layout(
        "aptos", root, {"task": "referable"},
        {"10_left": "no referable DR", "10_right": "no referable DR", "13_left": "referable DR",
         "13_right": "referable DR"},
        ["no referable DR", "referable DR"], "no referable DR",
        fields={"13_right": {"patient_id": "13", "eye": "right", "grade": 3, "split": "train"}},
        corruptions=standard(path, "level", 2, "level", "7", root / "train" / "13_left.jpeg"))


ODIR_HEADER = ["ID", "Patient Age", "Patient Sex", "Left-Fundus", "Right-Fundus", "Left-Diagnostic Keywords",
               "Right-Diagnostic Keywords", "N", "D", "G", "C", "A", "H", "M", "O", "filepath", "labels", "target",
               "filename"]


def build_odir(root: Path) -> Layout:
    patients = [
        [0, 69, "Female", "0_left.jpg", "0_right.jpg", "cataract", "normal fundus", 0, 0, 0, 1, 0, 0, 0, 0],
        [1, 57, "Male", "1_left.jpg", "1_right.jpg", "normal fundus", "normal fundus", 1, 0, 0, 0, 0, 0, 0, 0],
        [2, 42, "Male", "2_left.jpg", "2_right.jpg", "laser spot，moderate non proliferative retinopathy",
         "moderate non proliferative retinopathy", 0, 1, 0, 0, 0, 0, 0, 1],
    ]
    rows = []
    for p in patients:  # Kaggle's full_df.csv: one row per image, patient columns repeated
        for side in (3, 4):
            rows.append([*p, f"../input/ocular-disease-recognition-odir5k/ODIR-5K/Training Images/{p[side]}",
                         "['N']", "[1, 0, 0, 0, 0, 0, 0, 0]", p[side]])
    path = write_csv(root / "full_df.csv", ODIR_HEADER, rows)
    for i, p in enumerate(patients):
        for side in (3, 4):
            image(root / "ODIR-5K" / "Training Images" / p[side], seed=i * 2 + side, rgb=True)
    return Layout(
        "odir", root, {},
        {"0_left": "abnormal", "0_right": "normal", "1_left": "normal", "1_right": "normal", "2_left": "abnormal",
         "2_right": "abnormal"},
        ["normal", "abnormal"], "normal",
        fields={"0_right": {"patient_id": "0", "eye": "right", "age": 69.0, "sex": "F", "patient_diagnoses": "cataract"},
                "2_left": {"eye": "left", "sex": "M"}},
        corruptions=standard(path, "Left-Fundus", 3, "Patient Age", "sixty",
                             root / "ODIR-5K" / "Training Images" / "1_right.jpg"))


def build_odir_bilateral(root: Path) -> Layout:
    layout = build_odir(root)
    layout.options = {"mode": "bilateral"}
    layout.labels = {"0": "abnormal", "1": "normal", "2": "abnormal"}
    layout.fields = {"1": {"patient_id": "1", "age": 57.0, "sex": "M"}}
    return layout


def build_imagefolder(root: Path) -> Layout:
    """The Kermany chest_xray layout: split/CLASS/file."""
    names = {("train", "NORMAL"): ["IM-0115-0001.jpeg", "IM-0117-0001.jpeg"],
             ("train", "PNEUMONIA"): ["person1_bacteria_1.jpeg"],
             ("val", "NORMAL"): ["NORMAL2-IM-1427-0001.jpeg"],
             ("test", "PNEUMONIA"): ["person100_bacteria_475.jpeg"]}
    labels = {}
    for i, ((split, cls), files) in enumerate(names.items()):
        for j, name in enumerate(files):
            image(root / split / cls / name, seed=i * 10 + j)
            labels[f"{split}/{cls}/{Path(name).stem}"] = cls
    (root / "train" / "NORMAL" / "notes.txt").write_text("not an image")

    def remove_all() -> None:
        for path in sorted(root.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()

    def unguessable() -> None:
        for split in ("train", "val"):
            (root / split / "NORMAL").rename(root / split / "CLEAR")

    return Layout(
        "imagefolder", root, {}, labels, ["NORMAL", "PNEUMONIA"], "NORMAL",
        fields={"val/NORMAL/NORMAL2-IM-1427-0001": {"split": "val"}},
        corruptions=[Corruption("no_images", remove_all, ("no images",)),
                     Corruption("unknown_healthy", unguessable, ("healthy_class",))])


def dicom(path: Path, label_seed: int, patient: str, age: str, sex: str, institution: str, uid: str) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = uid + ".1"
    ds.SeriesInstanceUID = uid + ".2"
    ds.PatientID = patient
    ds.PatientAge = age
    ds.PatientSex = sex
    ds.InstitutionName = institution
    ds.Modality = "DX"
    ds.ViewPosition = "PA"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.random.default_rng(label_seed).integers(0, 255, 64, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def build_dicomfolder(root: Path) -> Layout:
    uids = ["1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", "1.2.826.0.1.3680043.8.498.3"]
    dicom(root / "normal" / "PAT001" / "study" / "IM0001.dcm", 0, "PAT001", "062Y", "F", "Hospital A", uids[0])
    dicom(root / "normal" / "PAT002" / "IM0001", 1, "PAT002", "045Y", "M", "Hospital B", uids[1])  # no suffix
    dicom(root / "effusion" / "PAT001" / "IM0002.dcm", 2, "PAT001", "063Y", "F", "Hospital A", uids[2])
    (root / "README.md").write_text("a note beside the images")

    def garbage() -> None:
        (root / "normal" / "broken.dcm").write_bytes(b"not a dicom file at all")

    def bad_age() -> None:
        from pydicom import config, dcmread

        path = root / "normal" / "PAT002" / "IM0001"
        ds = dcmread(path)
        with config.disable_value_validation():  # type: ignore[attr-defined]
            ds.PatientAge = "sixty"
            ds.save_as(path)

    def unlabelled() -> None:
        dicom(root / "IM9999.dcm", 3, "PAT003", "030Y", "F", "Hospital A", "1.2.826.0.1.3680043.8.498.9")

    return Layout(
        "dicomfolder", root, {}, {uids[0]: "normal", uids[1]: "normal", uids[2]: "effusion"},
        ["normal", "effusion"], "normal",
        fields={uids[0]: {"patient_id": "PAT001", "age": 62.0, "sex": "F", "site": "Hospital A", "view": "PA",
                          "modality": "DX"},
                uids[1]: {"patient_id": "PAT002", "sex": "M", "site": "Hospital B"}},
        corruptions=[Corruption("unreadable", garbage, ("broken.dcm", "cannot be read")),
                     Corruption("wrong_type", bad_age, ("PAT002/IM0001", "PatientAge", "sixty")),
                     Corruption("unlabelled", unlabelled, ("IM9999.dcm", "no label"))])


#: layout id -> (registry name, builder); every registered adapter needs at least one
LAYOUTS: dict[str, tuple[str, Callable[[Path], Layout]]] = {
    "medmnist": ("medmnist", build_medmnist),
    "chexpert": ("chexpert", build_chexpert),
    "nih": ("nih", build_nih),
    "nih_shared_layout": ("nih", build_nih_shared),
    "mimic": ("mimic", build_mimic),
    "ham10000": ("ham10000", build_ham10000),
    "isic2019": ("isic", build_isic2019),
    "isic2020": ("isic", build_isic2020),
    "fitzpatrick": ("fitzpatrick", build_fitzpatrick),
    "aptos": ("aptos", build_aptos),
    "eyepacs": ("aptos", build_eyepacs),
    "odir": ("odir", build_odir),
    "odir_bilateral": ("odir", build_odir_bilateral),
    "imagefolder": ("imagefolder", build_imagefolder),
    "dicomfolder": ("dicomfolder", build_dicomfolder),
}
