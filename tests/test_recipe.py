from pathlib import Path

import pytest
from conftest import CITY_ROW as ROW
from conftest import run_cli

from benchmark.errors import NLBenchError
from benchmark.recipe import REPO_ROOT, deep_merge, list_recipe_paths, load_recipe, parse_set_options


def test_sixteen_rows_resolve_with_facts():
    paths = list_recipe_paths()
    assert len(paths) == 16
    for path in paths:
        r = load_recipe(path)
        assert r.name == path.stem
        assert r.model.depth in (50, 101) and f"r{r.model.depth}-d8" in r.name
        assert r.schedule.max_iters == int(r.name.split("-")[2].split("_")[0].rstrip("k")) * 1000
        assert r.schedule.checkpoint_interval == r.schedule.max_iters // 10
        assert r.schedule.lr == 0.01 and r.schedule.min_lr == 1e-4 and r.schedule.weight_decay == 5e-4
        expected_batch = {"cityscapes": 8, "ade20k": 16, "voc12aug": 16}[r.data.dataset]
        assert r.effective_batch == expected_batch
        assert r.release.sha256_prefix in r.release.url
        if "769x769" in r.name:
            assert r.test.mode == "slide" and r.model.align_corners and r.test.stride == (513, 513)
        else:
            assert r.test.mode == "whole" and not r.model.align_corners


def test_base_merge_profile_and_set():
    r = load_recipe(ROW, ["schedule.max_iters=7", "runtime.amp=bf16"], profile="smoke")
    assert r.profile == "smoke" and r.model.depth == 18 and r.schedule.max_iters == 7
    assert r.runtime.amp == "bf16"
    assert r.data.synthetic is not None
    # the profile and overrides change the hash; loading twice does not
    assert load_recipe(ROW).hash == load_recipe(ROW).hash != r.hash


def test_deep_merge_replaces_lists_and_merges_maps():
    assert deep_merge({"a": {"b": 1, "c": [1, 2]}}, {"a": {"c": [3]}}) == {"a": {"b": 1, "c": [3]}}


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("model.depth=152", "model.depth"),
        ("model.nonsense=1", "model.nonsense: unknown key"),
        ("schedule.lr=fast", "schedule.lr"),
        ("data.crop_size=[1]", "data.crop_size"),
        ("test.mode=slide", "slide mode needs"),
    ],
)
def test_bad_values_name_file_and_key(override, fragment):
    with pytest.raises(NLBenchError) as info:
        load_recipe(ROW, [override])
    assert fragment in str(info.value) and ROW in str(info.value)


def test_bad_files(tmp_path: Path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: [unclosed\n")
    with pytest.raises(NLBenchError, match="invalid YAML: line"):
        load_recipe(bad_yaml)
    missing_base = tmp_path / "missing.yaml"
    missing_base.write_text("_base_: nowhere.yaml\n")
    with pytest.raises(NLBenchError, match="base file not found"):
        load_recipe(missing_base)
    cyc = tmp_path / "cyc.yaml"
    cyc.write_text("_base_: cyc.yaml\n")
    with pytest.raises(NLBenchError, match="cycle"):
        load_recipe(cyc)
    with pytest.raises(NLBenchError, match="no recipe named"):
        load_recipe("no_such_recipe")
    with pytest.raises(NLBenchError, match="unknown profile"):
        load_recipe(ROW, profile="huge")
    with pytest.raises(NLBenchError, match="dotted.key=value"):
        parse_set_options(["novalue"])


def test_cli_error_is_one_line_not_a_traceback():
    proc = run_cli("show", ROW, "--set", "model.depth=7", cwd=REPO_ROOT)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "model.depth" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_smoke_profile_keeps_backbones_and_schedules_apart():
    # The R-101 rows train wider smoke heads than the R-50 rows on the same ResNet-18 trunk (a deeper
    # trunk made the smoke mIoU unstable: docs/SMOKE.md); within a dataset, longer schedules more
    # iterations, and the Cityscapes and VOC rows twice the schedule's (their measured spread).
    iterations = {}
    for path in list_recipe_paths():
        full, smoke = load_recipe(path), load_recipe(path, profile="smoke")
        assert smoke.model.depth == 18, path.stem
        heads = (smoke.model.decode_head.channels, smoke.model.auxiliary_head.channels)
        assert heads == {50: (32, 16), 101: (48, 24)}[full.model.depth], path.stem
        assert smoke.model.pretrained is None
        iterations.setdefault((full.data.dataset, full.schedule.max_iters), set()).add(smoke.schedule.max_iters)
        assert smoke.schedule.eval_interval * 2 == smoke.schedule.max_iters
    assert {k: sorted(v) for k, v in iterations.items()} == {
        ("cityscapes", 40000): [440], ("cityscapes", 80000): [480], ("ade20k", 80000): [240],
        ("ade20k", 160000): [260], ("voc12aug", 20000): [400], ("voc12aug", 40000): [440]}
    # The full recipes of the R-101 rows are unchanged by their new base file: MMSeg's R-101 model.
    r101 = load_recipe("nonlocal_r101-d8_4xb4-80k_ade20k-512x512")
    assert r101.model.depth == 101 and r101.model.pretrained == "open-mmlab://resnet101_v1c"
