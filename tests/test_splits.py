import argparse
import json
from collections import Counter

import numpy as np
import pytest

from massl.cli import main
from massl.data.splits import DEFAULT_PROTOCOL, cli_split, load_split, make_split, setting_cases
from massl.errors import ConfigError, DataError

BRATS = DEFAULT_PROTOCOL["brats18"]
WMH = DEFAULT_PROTOCOL["wmh17"]


def brats_split(case_ids, rep):
    return make_split(case_ids, None, rep=rep, pool=120, test=50, validation=None,
                      settings=BRATS["settings"], balance_by_site=False, dataset="brats18")


def wmh_split(case_ids, sites, rep):
    return make_split(case_ids, sites, rep=rep, pool=30, test=20, validation=10,
                      settings=WMH["settings"], balance_by_site=True, dataset="wmh17")


BRATS_IDS = [f"Brats18_SYN_{i:04d}_1" for i in range(210, 0, -1)]  # deliberately unsorted
WMH_SITES = {**{str(i): "Utrecht" for i in range(0, 40, 2)}, **{str(i): "Singapore" for i in range(50, 90, 2)},
             **{str(i): "GE3T" for i in range(100, 120)}}


def test_brats_sizes_disjoint_and_complete():
    split = brats_split(BRATS_IDS, 1)
    assert (len(split["pool"]), len(split["test"]), len(split["validation"])) == (120, 50, 40)
    parts = split["pool"] + split["test"] + split["validation"]
    assert sorted(parts) == sorted(BRATS_IDS)  # disjoint and covering: 210 distinct ids
    assert (split["dataset"], split["rep"], split["seed"]) == ("brats18", 1, 1)


def test_order_is_the_sorted_list_shuffled_with_seed_rep():
    ids = ["d", "b", "a", "e", "c", "f"]
    split = make_split(ids, None, rep=3, pool=3, test=2, validation=None, settings={"1L2U": [1, 2]},
                       balance_by_site=False, dataset="toy")
    order = list(np.random.default_rng(3).permutation(["a", "b", "c", "d", "e", "f"]))
    assert split["pool"] == order[:3] and split["test"] == order[3:5] and split["validation"] == order[5:]
    assert split["settings"]["1L2U"] == {"labeled": order[:1], "unlabeled": order[1:3]}


def test_explicit_validation_leaves_the_remainder_unused():
    split = make_split([str(i) for i in range(10)], None, rep=0, pool=4, test=3, validation=2,
                       settings={"2L2U": [2, 2]}, balance_by_site=False, dataset="toy")
    used = split["pool"] + split["test"] + split["validation"]
    assert len(split["validation"]) == 2 and len(set(used)) == 9


def test_deterministic_per_rep_and_reps_differ():
    assert brats_split(BRATS_IDS, 2) == brats_split(list(reversed(BRATS_IDS)), 2)
    pools = {tuple(brats_split(BRATS_IDS, rep)["pool"]) for rep in range(1, 6)}
    assert len(pools) == 5


def test_settings_follow_the_labeled_unlabeled_rule():
    split = brats_split(BRATS_IDS, 4)
    pool, settings = split["pool"], split["settings"]
    assert settings["20L100U"] == {"labeled": pool[:20], "unlabeled": pool[20:120]}
    assert settings["50L70U"] == {"labeled": pool[:50], "unlabeled": pool[50:120]}
    assert settings["120L120U"] == {"labeled": pool, "unlabeled": pool}  # all 120 as both
    # L + U > pool: the last U cases, overlapping the labeled ones (hand-worked)
    assert setting_cases(list("abcdefghij"), 8, 5) == {"labeled": list("abcdefgh"), "unlabeled": list("fghij")}


def test_wmh_site_balance():
    for rep in range(1, 6):
        split = wmh_split(list(WMH_SITES), WMH_SITES, rep)
        counts = {key: Counter(WMH_SITES[c] for c in split[key]) for key in ("pool", "test", "validation")}
        assert counts["pool"] == {"Utrecht": 10, "Singapore": 10, "GE3T": 10}
        assert sorted(counts["test"].values()) == [6, 7, 7]
        assert sorted(counts["validation"].values()) == [3, 3, 4]
        labeled = Counter(WMH_SITES[c] for c in split["settings"]["10L20U"]["labeled"])
        assert sorted(labeled.values()) == [3, 3, 4]
        assert len(set(split["pool"] + split["test"] + split["validation"])) == 60
    assert wmh_split(list(WMH_SITES), WMH_SITES, 1) != wmh_split(list(WMH_SITES), WMH_SITES, 2)


def test_site_balance_with_unequal_sites_uses_what_there_is():
    sites = {**{f"a{i}": "A" for i in range(3)}, **{f"b{i}": "B" for i in range(12)}}
    split = make_split(list(sites), sites, rep=1, pool=6, test=4, validation=None, settings={"3L3U": [3, 3]},
                       balance_by_site=True, dataset="toy")
    assert Counter(sites[c] for c in split["pool"]) == {"A": 3, "B": 3}
    assert sorted(split["pool"] + split["test"] + split["validation"]) == sorted(sites)


@pytest.mark.parametrize("kwargs, message", [
    ({}, r"brats18: split needs 170 cases \(pool 120 \+ test 50\), found 60"),
    ({"validation": 20, "pool": 30, "test": 20}, r"needs 70 cases \(pool 30 \+ test 20 \+ validation 20\), found 60"),
    ({"pool": 40, "test": 20}, r"validation \(the rest\) would be empty"),
    ({"pool": -1}, r"split.pool must be >= 1, found -1"),
    ({"pool": 10, "test": 10, "settings": {"20L10U": [20, 10]}},
     r"settings.20L10U needs L 20 and U 10 each <= pool 10"),
    ({"pool": 10, "test": 10, "settings": {"5L15U": [5, 15]}}, r"each <= pool 10"),
    ({"pool": 10, "test": 10, "settings": {"5L5U": [5, 6]}}, r"the name says L 5, U 5"),
    ({"pool": 10, "test": 10, "settings": {"x": [-2, 5]}}, r"L >= 1 and U >= 0"),
    ({"pool": 10, "test": 10, "balance_by_site": True}, r"balance_by is 'site' but the cases have no site"),
])
def test_impossible_sizes_raise_with_a_message(kwargs, message):
    args = {"case_ids": [str(i) for i in range(60)], "sites": None, "rep": 1, "pool": 120, "test": 50,
            "validation": None, "settings": {"1L1U": [1, 1]}, "balance_by_site": False, "dataset": "brats18"}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=message):
        make_split(**args)


def test_load_split_round_trip_and_errors(tmp_path):
    split = brats_split(BRATS_IDS, 1)
    path = tmp_path / "rep1.json"
    path.write_text(json.dumps(split))
    assert load_split(path) == split

    broken = dict(split)
    del broken["test"]
    path.write_text(json.dumps(broken))
    with pytest.raises(DataError, match=r"rep1.json: missing key\(s\) test"):
        load_split(path)
    overlapping = dict(split, test=split["test"][:-1] + [split["pool"][0]])
    path.write_text(json.dumps(overlapping))
    with pytest.raises(DataError, match="'pool' and 'test' share 1 case"):
        load_split(path)
    path.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_split(path)


def write_cases(path, sites):
    lines = ["case_id\tsite\tshape_zyx"] + [f"{case}\t{site}\t1x1x1" for case, site in sites.items()]
    path.write_text("\n".join(lines) + "\n")


def test_cli_split_writes_once_and_refuses_a_different_split(tmp_path):
    cases = tmp_path / "cases.tsv"
    write_cases(cases, WMH_SITES)
    config = tmp_path / "config.json"  # a workflow config of the real WMH data (its folder: tmp_path)
    config.write_text(json.dumps({"datasets": {"wmh17": {"format": "wmh17", "root": str(tmp_path), **WMH}},
                                  "probe": {"dataset": "wmh17"}}))
    out = tmp_path / "splits" / "rep1.json"
    args = argparse.Namespace(cases=str(cases), dataset="wmh17", rep=1, out=str(out), config=str(config))
    assert cli_split(args) == 0
    assert load_split(out) == wmh_split(list(WMH_SITES), WMH_SITES, 1)
    written = out.stat().st_mtime_ns
    assert cli_split(args) == 0  # identical: accepted, untouched
    assert out.stat().st_mtime_ns == written

    args.rep = 2
    with pytest.raises(DataError, match="a different split already exists"):
        cli_split(args)
    argv = ["split", "--cases", str(cases), "--dataset", "wmh17", "--rep", "2", "--out", str(out),
            "--config", str(config)]
    assert main(argv) == 2


def test_cli_split_defaults_to_the_paper_protocol_and_checks_the_config(tmp_path, capsys):
    cases = tmp_path / "cases.tsv"
    write_cases(cases, {case: "SYN" for case in BRATS_IDS})
    out = tmp_path / "rep3.json"
    assert main(["split", "--cases", str(cases), "--dataset", "brats18", "--rep", "3", "--out", str(out)]) == 0
    assert load_split(out) == brats_split(BRATS_IDS, 3)

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"datasets": {"brats18": {"format": "brats18", "root": str(tmp_path),
                                                            "split": {"pool": 120, "tset": 50},
                                                            "settings": BRATS["settings"]}}}))
    assert main(["split", "--cases", str(cases), "--dataset", "brats18", "--rep", "3", "--out",
                 str(tmp_path / "x.json"), "--config", str(config)]) == 2
    assert "datasets.brats18.split: unknown key(s) tset" in capsys.readouterr().err
