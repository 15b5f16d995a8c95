import json
import re

from PIL import Image
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


def test_of_a_seed_trained_with_two_resolved_recipes_the_curves_show_the_latest(tmp_path):
    import os

    from benchmark.report.plots import train_logs
    from benchmark.report.row_curves import run_logs

    row = tmp_path / "work" / "full" / ROW
    old, new = row / f"seed0-{'a' * 12}" / "train.log.jsonl", row / f"seed0-{'b' * 12}" / "train.log.jsonl"
    write_log(new)
    write_log(old)
    os.utime(old, (1_000_000, 1_000_000))  # the older run, written first
    write_log(row / "seed1" / "train.log.jsonl")  # a work dir from before the hash was in its name
    # No records: the log written last (a run still training has none).
    assert train_logs(tmp_path, "full", {}) == [new, row / "seed1" / "train.log.jsonl"]
    assert run_logs(tmp_path, "full", ROW, {}) == {"seed0": new, "seed1": row / "seed1" / "train.log.jsonl"}


def test_the_curves_are_those_of_the_configuration_the_records_were_chosen_from(tmp_path):
    """Two configurations of one seed: the newer work dir (by file time) is not the one the records
    were chosen from; curves, overlays and row pages show the records' one, as the mIoU does."""
    import os

    from report_helpers import make_record

    from benchmark.report.collect import collect
    from benchmark.report.plots import row_train_logs, train_logs
    from benchmark.report.row_curves import run_logs, train_deviations
    from benchmark.report.seed_logs import row_seeds
    from benchmark.run.records import write_record

    row = tmp_path / "work" / "full" / ROW
    old, new = row / f"seed0-{'a' * 12}" / "train.log.jsonl", row / f"seed0-{'b' * 12}" / "train.log.jsonl"
    write_log(old)
    write_log(new)
    os.utime(old, (1_000_000, 1_000_000))  # the chosen configuration's log is the older file
    write_log(row / "seed1" / "train.log.jsonl")  # a work dir from before the hash was in its name
    for seed, recipe_hash, phrase in ((0, "a" * 64, "effective batch 4 instead of 8"), (1, "c" * 64, "on a CPU")):
        for kind in ("train", "eval"):
            record = make_record(kind, seed=seed)
            record["provenance"]["recipe_hash"] = recipe_hash
            record["deviations"] = [phrase]
            write_record(tmp_path, record)
    seeds = row_seeds(collect(tmp_path).newest, ROW, "full")
    assert train_logs(tmp_path, "full", collect(tmp_path).newest) == [old, row / "seed1" / "train.log.jsonl"]
    assert row_train_logs(tmp_path, "full", ROW, seeds) == [old, row / "seed1" / "train.log.jsonl"]
    assert run_logs(tmp_path, "full", ROW, seeds) == {"seed0": old, "seed1": row / "seed1" / "train.log.jsonl"}
    assert train_deviations(seeds) == "effective batch 4 instead of 8; on a CPU"
    old.unlink()  # the chosen configuration left no log: no curve rather than another configuration's
    assert run_logs(tmp_path, "full", ROW, seeds) == {"seed1": row / "seed1" / "train.log.jsonl"}


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
            with Image.open(out / name) as image:  # a drawn figure: wider than tall, not one flat colour
                assert image.width > image.height > 200, name
                colours = image.convert("RGB").getcolors(maxcolors=1 << 16)  # None: more than that
                assert colours is None or len(colours) > 16, name
        else:
            assert b"<svg" in data[:2000] and data.rstrip().endswith(b"</svg>")
    # What each figure shows, from the texts matplotlib writes into the SVG beside each drawn string: the
    # rows of its profile and none of the other's, the device that measured them, and the seeds' curves.
    shown = {name: _svg_texts(out / name) for name in names if name.endswith(".svg")}
    full_row, smoke_row = "CS R-50 512x1024 40k", "CS R-50 769x769 40k"  # ROW and ROWS[9], as the plots label them
    for kind in ("miou", "memory"):
        assert full_row in shown[f"{kind}_full.svg"] and smoke_row not in shown[f"{kind}_full.svg"]
        assert smoke_row in shown[f"{kind}_smoke.svg"] and full_row not in shown[f"{kind}_smoke.svg"]
    for profile in ("full", "smoke"):
        for kind in ("miou", "memory", "miou_vs_fps"):
            assert f"({profile} profile)" in shown[f"{kind}_{profile}.svg"]
    assert "Tesla V100-SXM2-32GB" in shown["memory_full.svg"] and "on cpu" in shown["memory_smoke.svg"]
    assert {"R-50 40k seed0", "R-50 40k seed1"} <= set(shown["training_curves_full.svg"].splitlines())
    assert str(out / "miou_full.png") in capsys.readouterr().out


def _svg_texts(path) -> str:
    """The strings a matplotlib SVG draws (it writes each as a comment beside its glyphs), one a line."""
    return "\n".join(re.findall(r"<!-- (.*?) -->", path.read_text(encoding="utf-8")))


def _drawn_ticklabels(axis, limits):
    lo, hi = sorted(limits)
    return [label for loc, label in zip(axis.get_ticklocs(), axis.get_ticklabels()) if lo <= loc <= hi]


def _texts(fig):
    """Window extents of every text a drawn figure shows: titles, axis and tick labels, legends."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = list(fig.texts) + ([fig._suptitle] if fig._suptitle is not None else [])
    legends = list(fig.legends)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
        texts += _drawn_ticklabels(ax.xaxis, ax.get_xlim()) + _drawn_ticklabels(ax.yaxis, ax.get_ylim())
        legends += [ax.get_legend()] if ax.get_legend() is not None else []
    for legend in legends:
        texts += list(legend.get_texts()) + [legend.get_title()]
    unique = {id(t): t for t in texts}.values()  # the suptitle is one of fig.texts too
    return [(t.get_text(), t.get_window_extent(renderer)) for t in unique if t.get_visible() and t.get_text().strip()]


def _overlaps(fig):
    boxes = _texts(fig)
    return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:]
            if box_a.overlaps(box_b) and box_a.width > 0 and box_b.width > 0]


def _same_figures_everywhere(tmp_path):
    """Every row in the smoke profile with the same numbers and logs, as the old smoke profile gave."""
    results = tmp_path / "results"
    for row in ROWS:
        write_row(results, recipe=row, profile="smoke", miou=58.43, fps=80.0, mem_gb=0.7)
        write_log(results / "work" / "smoke" / row / "seed0" / "train.log.jsonl")
    return results


def test_miou_vs_fps_labels_never_overlap_even_when_rows_coincide(tmp_path):
    import matplotlib.pyplot as plt

    from benchmark.catalog import load_published
    from benchmark.report.collect import collect
    from benchmark.report.plots import plot_miou_vs_fps

    summary = collect(_same_figures_everywhere(tmp_path)).summary
    fig = plot_miou_vs_fps(summary, load_published(), "smoke")
    assert _overlaps(fig) == []
    # Every row is named once, in a legend of its dataset setting's panel.
    labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert len(labels) == 16 and len(fig.axes) == 4
    plt.close(fig)


def test_training_curves_can_be_told_apart_in_every_panel(tmp_path):
    import matplotlib.pyplot as plt

    from benchmark.catalog import load_published
    from benchmark.report.collect import collect
    from benchmark.report.plots import plot_training_curves

    results = _same_figures_everywhere(tmp_path)
    fig = plot_training_curves(results, load_published(), "smoke", collect(results).newest)
    assert len(fig.axes) == 12  # 4 dataset settings x (loss, lr, mIoU)
    for ax in fig.axes:
        styles = [(line.get_color(), line.get_linestyle()) for line in ax.get_lines()]
        assert len(styles) == 4 and len(set(styles)) == 4, ax.get_title()
        # Two backbones' lines with the very same points (R-50 and R-101 share their lr schedule)
        # stay visible: the one underneath is wider than the one on top.
        lines = ax.get_lines()
        same = [(a, b) for a in lines for b in lines if a.get_color() != b.get_color()
                and a.get_xydata().tolist() == b.get_xydata().tolist()]
        assert same, ax.get_title()  # these logs are alike: every panel holds such lines
        for a, b in same:
            below, above = sorted((a, b), key=lambda line: line.get_zorder())
            assert below.get_zorder() < above.get_zorder(), ax.get_title()
            assert below.get_linewidth() > above.get_linewidth() + 1, ax.get_title()
    assert _overlaps(fig) == []
    plt.close(fig)
