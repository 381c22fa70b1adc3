"""``seeinpairs check-model``: every registered tiny family prints its row and passes; anything else exits 2."""

import json
import sys

import pytest

from seeinpairs.backends.tiny import TINY_FAMILIES
from seeinpairs.studies.check_model import CHECKS

COLUMNS = ["load", *(label for label, _ in CHECKS)]
#: checks whose fast path may be absent for a family (then "not registered" with the reason)
OPTIONAL = {"prefix cache", "vision cache", "attribution"}


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """The console entry point in-process: (exit status, stdout, stderr)."""
    from seeinpairs.cli.app import main

    monkeypatch.setattr(sys, "argv", ["seeinpairs", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        main()
        sys.exit(0)
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def cells(row: str) -> dict[str, str]:
    """{check: status} from a printed row ``model (type): name status 0.12s | ...``."""
    result = {}
    for cell in row.split(": ", 1)[1].split(" | "):
        words = cell.rsplit(" ", 1)[0]
        name = next(c for c in COLUMNS if words.startswith(c + " "))
        result[name] = words[len(name) + 1:]
    return result


@pytest.mark.parametrize("family", TINY_FAMILIES.list_names())
def test_each_tiny_family_prints_its_row_and_passes(tiny_models, monkeypatch, capsys, family):
    code, out, err = run_main(monkeypatch, capsys, "check-model", tiny_models[family], "--device", "cpu")
    assert code == 0, err
    row, *notes = out.strip().splitlines()
    assert row.startswith(f"{tiny_models[family]} ({family}): ")
    statuses = cells(row)
    assert list(statuses) == COLUMNS
    for name, status in statuses.items():
        assert status == "ok" or (name in OPTIONAL and status == "not registered"), (name, status)
        if status != "ok":  # the reason is printed under the row
            assert any(note.strip().startswith(f"{name}: {status}: ") for note in notes)


def test_json_output_has_every_check_with_timings(tiny_models, monkeypatch, capsys):
    code, out, _ = run_main(monkeypatch, capsys, "check-model", tiny_models["qwen2_vl"], "--device", "cpu", "--json")
    assert code == 0
    row = json.loads(out)
    assert row["passed"] and row["model_type"] == "qwen2_vl"
    assert [c["name"] for c in row["checks"]] == COLUMNS
    assert all(c["seconds"] >= 0 and c["status"] == "ok" for c in row["checks"])  # every path registered here
    assert "max abs difference" in next(c for c in row["checks"] if c["name"] == "prefix cache")["detail"]


def test_a_fast_path_that_differs_fails_with_one_line(tiny_models, monkeypatch, capsys):
    monkeypatch.setattr("seeinpairs.studies.check_model.tolerance", lambda model: 0.0)  # no difference is small enough
    code, out, err = run_main(monkeypatch, capsys, "check-model", tiny_models["idefics3"], "--device", "cpu")
    assert code == 2
    assert "shared prompt failed" in out
    assert len(err.strip().splitlines()) == 1 and "check 'shared prompt' failed: " in err


def write_text_only_model(folder):
    import transformers

    transformers.LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             vocab_size=100).save_pretrained(folder)


@pytest.mark.parametrize("kind, message", [
    ("empty", "not a vision-language model checkpoint (no config.json)"),
    ("text-only", "not a vision-language model checkpoint (model type 'llama'"),
    ("missing", "no such folder"),
])
def test_a_folder_that_is_not_a_vlm_exits_2_with_one_line(tmp_path, monkeypatch, capsys, kind, message):
    folder = tmp_path / kind
    if kind == "empty":
        folder.mkdir()
    elif kind == "text-only":
        write_text_only_model(folder)
    code, out, err = run_main(monkeypatch, capsys, "check-model", folder)
    assert code == 2 and not out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {folder}: ") and message in lines[0]


def test_a_checkpoint_without_its_weights_exits_2_with_one_line(tiny_models, tmp_path, monkeypatch, capsys):
    """Config and processor files present, the weights file missing (an interrupted download)."""
    import shutil

    folder = tmp_path / "no-weights"
    shutil.copytree(tiny_models["qwen2_vl"], folder,
                    ignore=lambda _, names: [n for n in names if n.endswith((".safetensors", ".bin"))])
    code, out, err = run_main(monkeypatch, capsys, "check-model", folder, "--device", "cpu")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: cannot load model '{folder}'"), err
