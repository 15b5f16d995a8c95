import json

from report_helpers import ROW, ROWS, write_row

from benchmark.cli import main as cli
from benchmark.report.plots import read_train_log


def write_log(path, iterations=12):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for it in range(1, iterations + 1):
        lines.append(json.dumps({"iteration": it, "loss": 3.0 / it, "loss_decode": 2.0 / it, "loss_aux": 1.0 / it,
                                 "lr": 0.01 * (1 - it / (iterations + 1)) ** 0.9}))
        if it % 4 == 0:
            lines.append(json.dumps({"iteration": it, "mIoU": 10.0 + it, "aAcc": 50.0}))
    lines += ["not json", json.dumps({"loss": 1.0}), json.dumps([1, 2])]  # skipped, not fatal
    path.write_text("\n".join(lines) + "\n")


def test_read_train_log_is_tolerant(tmp_path):
    log = tmp_path / "train.log.jsonl"
    write_log(log)
    series = read_train_log(log)
    assert sorted(series) == ["loss", "loss_aux", "loss_decode", "lr", "mIoU"]
    assert series["mIoU"] == {4: 14.0, 8: 18.0, 12: 22.0} and len(series["loss"]) == 12
    assert read_train_log(tmp_path / "missing.jsonl") == {}


def test_plots_write_nonempty_png_and_svg(tmp_path, capsys):
    results = tmp_path / "results"
    for seed in range(2):
        write_row(results, seed=seed, miou=70.0 + seed, fps=1.0 + seed, mem_gb=6.0, device="Tesla V100-SXM2-32GB")
        write_log(results / "work" / "full" / ROW / f"seed{seed}" / "train.log.jsonl")
    write_row(results, recipe=ROWS[9], profile="smoke", miou=12.0, fps=30.0, mem_gb=None)
    out = tmp_path / "plots"
    assert cli(["plots", "--results", str(results), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    expected = {f"{kind}_{profile}.{ext}" for kind in ("miou", "miou_vs_fps", "memory")
                for profile in ("full", "smoke") for ext in ("png", "svg")}
    expected |= {"training_curves_full.png", "training_curves_full.svg"}  # the smoke row has no log
    assert set(names) == expected
    for name in names:
        data = (out / name).read_bytes()
        assert len(data) > 5000, name
        if name.endswith(".png"):
            assert data.startswith(b"\x89PNG\r\n\x1a\n")
        else:
            assert b"<svg" in data[:2000] and data.rstrip().endswith(b"</svg>")
    assert str(out / "miou_full.png") in capsys.readouterr().out
