"""Monte Carlo cross-validation splits (SPEC section 6): per repetition r, the sorted case list is
shuffled with `numpy.random.default_rng(r)`; the first `pool` cases are the training pool, the
next `test` the test set, then the validation set (the rest, or exactly `validation` cases).

With site balancing (WMH) each site's sorted cases are shuffled separately and the sites, in a
shuffled order, take turns, so every consecutive run of the order (pool, test, validation, and
the labeled prefix of the pool) holds about equal numbers per site.

Settings `<L>L<U>U`: labeled = the first L of the pool; unlabeled = the next U when L + U fits
in the pool, otherwise the last U (120L120U uses all 120 as both).

Split files are written once and committed with the results, so every method sees identical
data; `cli_split` refuses to overwrite a split with a different one.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path

import numpy as np

from massl.config import SETTING_NAME, dataset_entry, load_config, resolved, split_section
from massl.errors import ConfigError, DataError
from massl.io import atomic_write_json

log = logging.getLogger(__name__)

SPLIT_KEYS = ("dataset", "rep", "seed", "pool", "validation", "test", "settings")
# The paper's protocol, used when no config is given.
DEFAULT_PROTOCOL = {
    "brats18": {"split": {"pool": 120, "validation": None, "test": 50, "balance_by": None},
                "settings": {"20L100U": [20, 100], "50L70U": [50, 70], "120L120U": [120, 120]}},
    "wmh17": {"split": {"pool": 30, "validation": 10, "test": 20, "balance_by": "site"},
              "settings": {"10L20U": [10, 20], "20L10U": [20, 10], "30L30U": [30, 30]}},
}


def make_split(case_ids: list[str], sites: dict[str, str] | None, rep: int, pool: int, test: int,
               validation: int | None, settings: dict[str, tuple[int, int]], balance_by_site: bool,
               dataset: str) -> dict:
    """One repetition's split; raises ConfigError when the sizes cannot be met."""
    n = len(case_ids)
    if len(set(case_ids)) != n:
        raise ConfigError(f"{dataset}: case ids are not unique")
    for key, value in (("pool", pool), ("test", test), ("validation", validation)):
        if value is not None and int(value) < 1:
            raise ConfigError(f"{dataset}: split.{key} must be >= 1, found {value}")
    needed = pool + test + (validation or 0)
    if needed > n:
        parts = f"pool {pool} + test {test}" + ("" if validation is None else f" + validation {validation}")
        raise ConfigError(f"{dataset}: split needs {needed} cases ({parts}), found {n}")
    if validation is None and n == needed:
        raise ConfigError(f"{dataset}: split.validation (the rest) would be empty: pool {pool} + test {test} "
                          f"uses all {n} cases; validation needs at least 1")
    _check_settings(settings, pool, dataset)

    rng = np.random.default_rng(rep)
    if balance_by_site:
        order = _site_balanced_order(sorted(case_ids), sites, rng, dataset)
    else:
        order = [str(c) for c in rng.permutation(sorted(case_ids))]
    pool_ids = order[:pool]
    test_ids = order[pool:pool + test]
    validation_ids = order[pool + test:] if validation is None else order[pool + test:pool + test + validation]
    return {
        "dataset": dataset, "rep": int(rep), "seed": int(rep),
        "pool": pool_ids, "validation": validation_ids, "test": test_ids,
        "settings": {name: setting_cases(pool_ids, int(labeled), int(unlabeled))
                     for name, (labeled, unlabeled) in settings.items()},
    }


def setting_cases(pool: list[str], labeled: int, unlabeled: int) -> dict[str, list[str]]:
    """Labeled = first L of the pool; unlabeled = next U if L + U fits, else the last U."""
    rest = pool[labeled:labeled + unlabeled] if labeled + unlabeled <= len(pool) else pool[len(pool) - unlabeled:]
    return {"labeled": pool[:labeled], "unlabeled": rest}


def _check_settings(settings: dict, pool: int, dataset: str) -> None:
    if not settings:
        raise ConfigError(f"{dataset}: settings is empty; give at least one, e.g. 20L100U: [20, 100]")
    for name, sizes in settings.items():
        key = f"{dataset}: settings.{name}"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)):
            raise ConfigError(f"{key}: the name is used in file paths; use letters, digits, '_', '.', '-'")
        if len(sizes) != 2:
            raise ConfigError(f"{key} must be [L, U], found {list(sizes)}")
        labeled, unlabeled = (int(v) for v in sizes)
        if labeled < 1 or unlabeled < 0:
            raise ConfigError(f"{key} needs L >= 1 and U >= 0, found L {labeled}, U {unlabeled}")
        if labeled > pool or unlabeled > pool:
            raise ConfigError(f"{key} needs L {labeled} and U {unlabeled} each <= pool {pool}")
        match = SETTING_NAME.match(str(name))
        if match and (int(match[1]), int(match[2])) != (labeled, unlabeled):
            raise ConfigError(f"{key}: the name says L {match[1]}, U {match[2]} but the sizes are "
                              f"[{labeled}, {unlabeled}]")


def _site_balanced_order(case_ids: list[str], sites: dict[str, str] | None, rng: np.random.Generator,
                         dataset: str) -> list[str]:
    if not sites:
        raise ConfigError(f"{dataset}: split.balance_by is 'site' but the cases have no site")
    missing = [c for c in case_ids if not sites.get(c)]
    if missing:
        raise ConfigError(f"{dataset}: split.balance_by is 'site' but {len(missing)} case(s) have no site, "
                          f"e.g. {missing[0]}")
    by_site: dict[str, list[str]] = {}
    for case in case_ids:
        by_site.setdefault(sites[case], []).append(case)
    queues = [[str(c) for c in rng.permutation(by_site[site])] for site in sorted(by_site)]
    queues = [queues[i] for i in rng.permutation(len(queues))]
    order = []
    while any(queues):
        for queue in queues:
            if queue:
                order.append(queue.pop(0))
    return order


def load_split(path: str | Path) -> dict:
    """Read and check a split file: keys, disjoint pool/validation/test, settings within the pool."""
    path = Path(path)
    try:
        split = json.loads(path.read_text())
    except OSError as exc:
        raise DataError(f"{path}: cannot read split ({exc.strerror})") from exc
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(split, dict):
        raise DataError(f"{path}: a split is a JSON object with keys {', '.join(SPLIT_KEYS)}")
    missing = [k for k in SPLIT_KEYS if k not in split]
    if missing:
        raise DataError(f"{path}: missing key(s) {', '.join(missing)}")
    for key in ("pool", "validation", "test"):
        if not isinstance(split[key], list) or not all(isinstance(c, str) for c in split[key]):
            raise DataError(f"{path}: '{key}' must be a list of case ids")
        if len(set(split[key])) != len(split[key]):
            raise DataError(f"{path}: '{key}' lists a case twice")
    for a, b in (("pool", "validation"), ("pool", "test"), ("validation", "test")):
        shared = set(split[a]) & set(split[b])
        if shared:
            raise DataError(f"{path}: '{a}' and '{b}' share {len(shared)} case(s), e.g. {min(shared)}")
    if not isinstance(split["settings"], dict):
        raise DataError(f"{path}: 'settings' must map setting names to labeled/unlabeled lists")
    pool = set(split["pool"])
    for name, sets in split["settings"].items():
        if not isinstance(sets, dict) or set(sets) != {"labeled", "unlabeled"}:
            raise DataError(f"{path}: settings.{name} must have exactly 'labeled' and 'unlabeled'")
        for kind, cases in sets.items():
            if not isinstance(cases, list) or not set(cases) <= pool:
                raise DataError(f"{path}: settings.{name}.{kind} must be a list of cases of the pool")
    return split


def read_cases_table(path: str | Path) -> tuple[list[str], dict[str, str]]:
    """Case ids and their sites from a `cases.tsv` (columns case_id and site)."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except OSError as exc:
        raise DataError(f"{path}: cannot read case table ({exc.strerror})") from exc
    if not rows:
        raise DataError(f"{path}: no cases")
    missing = [c for c in ("case_id", "site") if c not in rows[0]]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    return [row["case_id"] for row in rows], {row["case_id"]: row["site"] for row in rows}


def protocol(config: dict | None, dataset: str) -> tuple[dict, dict]:
    """(split sizes, settings) of `dataset` from a config (resolved first if it is not), or,
    without a config, the paper's protocol."""
    if config is None:
        if dataset not in DEFAULT_PROTOCOL:
            raise ConfigError(f"no config given and {dataset!r} has no default protocol; "
                              f"pass --config with datasets.{dataset}.split and .settings")
        entry = DEFAULT_PROTOCOL[dataset]
        return split_section(entry, dataset), entry["settings"]
    entry = dataset_entry(resolved(config), dataset)
    return entry["split"], entry["settings"]


def cli_split(args) -> int:
    case_ids, sites = read_cases_table(args.cases)
    sizes, settings = protocol(None if args.config is None else load_config(args.config), args.dataset)
    split = make_split(case_ids, sites, rep=args.rep, pool=sizes["pool"], test=sizes["test"],
                       validation=sizes["validation"], settings=settings,
                       balance_by_site=sizes["balance_by"] == "site", dataset=args.dataset)
    out = Path(args.out)
    if out.exists():
        if load_split(out) != json.loads(json.dumps(split)):
            raise DataError(f"{out}: a different split already exists; splits are written once and "
                            f"committed with the results. Delete it deliberately to make a new one")
        log.info("%s: identical split already present", out)
        return 0
    atomic_write_json(out, split)
    log.info("%s: pool %d, validation %d, test %d", out, len(split["pool"]), len(split["validation"]),
             len(split["test"]))
    return 0
