"""Every figure is written as a non-empty PNG and PDF from tiny hand-made result files."""

import numpy as np
import pytest
from analysis_fixtures import LIBRARY, cases_frame, probe_table, resolved_config, write_config, write_run
from matplotlib.colors import to_hex

from analysis import figures
from analysis.common import DataError, run_cli
from analysis.methods import colour_of

pytestmark = pytest.mark.usefixtures("method_table")


def _figure(tmp_path, *args, config=None) -> int:
    config = config or write_config(tmp_path / "config.json")
    return run_cli(figures.build_parser(), [*map(str, args), "--config", str(config), "--out", str(tmp_path / "fig")])


def _assert_written(tmp_path):
    png, pdf = (tmp_path / "fig.png").read_bytes(), (tmp_path / "fig.pdf").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert pdf.startswith(b"%PDF") and len(pdf) > 1000


@pytest.fixture
def runs(tmp_path):
    dirs = []
    for setting in ("20L100U", "50L70U"):
        for method, rec in (("cnn", 0), ("mssl_alter", 1), ("massl_alter", 2)):
            for rep in (1, 2):
                dirs.append(write_run(tmp_path / "results", "brats18", setting, method, rep, [0.6, 0.7, 0.8],
                                      rec_channels=rec))
    dirs.append(write_run(tmp_path / "results", "brats18", "20L100U", "massl_l07", 1, [0.5], status="diverged",
                          rec_channels=2))
    return dirs


def test_dice_figure_uses_one_colour_per_method(tmp_path):
    rng = np.random.default_rng(0)
    cells = {(s, m): [list(rng.uniform(0.5, 0.8, 5)) for _ in range(2)]
             for s in ("20L100U", "50L70U") for m in ("cnn", "mssl_l07", "massl_alter")}
    cases = cases_frame(cells, diverged={("20L100U", "mssl_l07", 2)})
    fig = figures.dice_figure(cases)
    colours = {to_hex(c.get_facecolor()[0]).upper() for ax in fig.axes for c in ax.collections}
    assert colours == {colour_of(m).upper() for m in ("cnn", "mssl_l07", "massl_alter")}
    assert any(t.get_text().startswith("n.c.") for t in fig.axes[0].texts)

    path = tmp_path / "cases.tsv"
    cases.to_csv(path, sep="\t", index=False)
    assert _figure(tmp_path, "dice", "--cases", path) == 0
    _assert_written(tmp_path)


def test_curves_figure(tmp_path, runs):
    assert _figure(tmp_path, "curves", "--runs", *runs) == 0
    _assert_written(tmp_path)


def test_examples_figure_skips_diverged_runs(tmp_path, runs):
    assert _figure(tmp_path, "examples", "--runs", *runs, "--methods", "cnn,massl_alter,massl_l07") == 0
    _assert_written(tmp_path)
    fig = figures.examples_figure(runs, ["cnn", "massl_l07"])  # massl_l07's only run diverged: no column
    assert len(fig.axes) == 2
    assert _figure(tmp_path, "examples", "--runs", runs[-1], "--methods", "massl_l07") == 2


def test_reconstructions_figure_needs_two_channel_massl_runs(tmp_path, runs):
    assert _figure(tmp_path, "reconstructions", "--runs", *runs) == 0
    _assert_written(tmp_path)
    assert _figure(tmp_path, "reconstructions", "--runs", *runs[:4]) == 2  # CNN and MSSL runs only
    broken = write_run(tmp_path / "other", "brats18", "20L100U", "massl_alter", 1, [0.6], rec_channels=1)
    with pytest.raises(DataError, match="2 channels"):
        figures.reconstructions_figure([broken])


def test_reconstructions_take_the_attention_rows_of_the_method_table(tmp_path, runs, capsys):
    # a table in which MSSL(alter) reconstructs with attention and MASSL(alter) does not
    swap = {"mssl_alter": "attention", "massl_alter": "plain", "massl_l07": "plain", "massl_l09": "plain"}
    rows = [{**row, "reconstruction": swap.get(row["id"], row["reconstruction"])} for row in LIBRARY["method_table"]]
    config = write_config(tmp_path / "swapped.json", library={**LIBRARY, "method_table": rows})
    mssl_runs = [r for r in runs if r.parts[-2] == "mssl_alter"]  # one-channel examples: refused as attention
    assert _figure(tmp_path, "reconstructions", "--runs", *mssl_runs, config=config) == 2
    assert "an attention reconstruction has 2 channels" in capsys.readouterr().err
    massl_runs = [r for r in runs if r.parts[-2].startswith("massl")]
    assert _figure(tmp_path, "reconstructions", "--runs", *massl_runs, config=config) == 2
    assert "no converged run of an attention-reconstruction method (MSSL(alter))" in capsys.readouterr().err
    assert resolved_config()["library"] == LIBRARY  # the swap was a copy


def test_every_figure_needs_the_config(tmp_path, runs, capsys):
    with pytest.raises(SystemExit):
        run_cli(figures.build_parser(), ["curves", "--runs", str(runs[0]), "--out", str(tmp_path / "fig")])
    assert "--config" in capsys.readouterr().err


def test_probe_figure(tmp_path):
    path = tmp_path / "table3.csv"
    probe_table().to_csv(path, index=False)
    assert _figure(tmp_path, "probe", "--table", path) == 0
    _assert_written(tmp_path)


def test_missing_example_file_is_reported(tmp_path, runs, capsys):
    (runs[0] / "examples.npz").unlink()
    assert _figure(tmp_path, "examples", "--runs", runs[0], "--methods", "cnn") == 2
    assert "examples.npz" in capsys.readouterr().err


def test_probe_figure_leaves_a_gap_for_a_refused_level(tmp_path):
    table = probe_table().assign(score="held_out", reason="")
    table.loc[table["level"] == 5, ["mean", "variance"]] = np.nan
    table.loc[table["level"] == 5, "reason"] = "under-determined: 64 samples for 256 features (< 10 per feature)"
    fig = figures.probe_figure(table)
    assert fig.axes[0].get_ylabel() == "R² of linear probe (held-out)"
    path = tmp_path / "table3.csv"
    table.to_csv(path, index=False)
    assert _figure(tmp_path, "probe", "--table", path) == 0
    _assert_written(tmp_path)
