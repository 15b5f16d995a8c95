"""`nlbench tables --metafile`: MMSegmentation 1.x's metafile.yaml (model index) from the records."""

import pytest
import yaml
from report_helpers import ROWS, write_row

from benchmark.catalog import load_published
from benchmark.cli import main as cli

MODEL_KEYS = {"Name", "In Collection", "Results", "Config", "Metadata", "Weights", "Training log", "Paper",
              "Framework"}
METADATA_KEYS = {"Training Data", "Batch Size", "Architecture", "Training Resources", "Memory (GB)",
                 "inference time (ms/im)"}


@pytest.fixture()
def results(tmp_path):
    results = tmp_path / "results"
    published = load_published()
    for i, row in enumerate(ROWS):
        ms_flip = 80.0 + i if published.loc[row, "miou_ms_flip"] == published.loc[row, "miou_ms_flip"] else None
        write_row(results, recipe=row, miou=70.0 + i, ms_flip=ms_flip, fps=2.0 + i / 10, mem_gb=7.0 + i / 10,
                  device="Tesla V100-SXM2-32GB")
    return results


def test_metafile_round_trips_through_pyyaml_one_entry_per_row(results, tmp_path):
    target = tmp_path / "metafile.yaml"
    readme = tmp_path / "README.md"
    assert cli(["tables", "--results", str(results), "--metafile", str(target), "--readme", str(readme)]) == 0
    assert not readme.exists()  # the metafile is written instead of the markdown tables
    document = yaml.safe_load(target.read_text(encoding="utf-8"))
    assert yaml.safe_load(yaml.safe_dump(document, sort_keys=False)) == document
    assert [c["Name"] for c in document["Collections"]] == ["NonLocalNet"]
    models = document["Models"]
    published = load_published()
    assert [m["Name"] for m in models] == list(published.index)  # full rows keep the config name, in order
    for model in models:
        row = published.loc[model["Name"]]
        assert set(model) == MODEL_KEYS and set(model["Metadata"]) == METADATA_KEYS
        assert model["In Collection"] == "NonLocalNet"
        assert model["Config"] == f"recipes/{model['Name']}.yaml"
        results_ = model["Results"]
        assert results_["Task"] == "Semantic Segmentation" and results_["Dataset"] == row["dataset"]
        k = ROWS.index(model["Name"])
        expected = {"mIoU": 70.0 + k}
        if row["miou_ms_flip"] == row["miou_ms_flip"]:
            expected["mIoU(ms+flip)"] = 80.0 + k
        assert results_["Metrics"] == pytest.approx(expected)
        meta = model["Metadata"]
        assert meta["Training Data"] == row["dataset"]
        assert meta["Architecture"] == [row["backbone"], "NonLocalNet"]
        per_gpu = 2 if row["dataset"] == "Cityscapes" else 4
        assert meta["Batch Size"] == per_gpu  # these records come from one process (world size 1)
        assert meta["Training Resources"] == "1x V100"
        assert meta["Memory (GB)"] == pytest.approx(7.0 + k / 10)
        (timing,) = meta["inference time (ms/im)"]
        assert timing == {"value": round(1000.0 / (2.0 + k / 10), 2), "hardware": "V100", "backend": "PyTorch",
                          "batch size": 1, "mode": "FP32", "resolution": "(%s)" % row["crop_size"].replace("x", ",")}
        assert model["Weights"] is None and model["Training log"] is None  # no work dirs in this results folder


def test_smoke_rows_name_their_profile_and_small_trunk(tmp_path):
    results = tmp_path / "results"
    write_row(results, recipe=ROWS[0], profile="smoke", miou=40.0, fps=30.0, mem_gb=0.5)
    target = tmp_path / "meta.yaml"
    assert cli(["tables", "--results", str(results), "--metafile", str(target)]) == 0
    (model,) = yaml.safe_load(target.read_text())["Models"]
    assert model["Name"] == f"{ROWS[0]}_smoke"
    assert model["Metadata"]["Architecture"][0] in ("R-18-D8", "R-34-D8")
    assert "mIoU(ms+flip)" not in model["Results"]["Metrics"]  # not measured: left out


def test_metafile_does_not_combine_with_check(results, tmp_path, capsys):
    assert cli(["tables", "--results", str(results), "--metafile", str(tmp_path / "m.yaml"), "--check"]) == 2
    assert "--metafile" in capsys.readouterr().err
