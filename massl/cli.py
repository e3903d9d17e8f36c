"""`massl` command line. Each subcommand's work lives in the module named in its handler; the
imports are lazy so `massl --help` is instant and needs no torch."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import textwrap
import traceback

from massl.config import FORMATS, SYNTHETIC_FORMATS
from massl.errors import EXIT_BAD_INPUT, EXIT_BUG, EXIT_CODES, EXIT_FILE_SYSTEM, MasslError


def _handler(target: str):
    def run(args: argparse.Namespace) -> int:
        module, func = target.split(":")
        return getattr(importlib.import_module(module), func)(args) or 0

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="massl",
        description="MASSL replication suite: data, training, evaluation and benchmarks for\n"
        "multi-task attention-based semi-supervised segmentation (Chen et al., MICCAI 2019).",
        epilog="exit codes (all commands):\n" + "\n".join(
            textwrap.fill(text, 90, initial_indent=f"  {code}  ", subsequent_indent="     ")
            for code, text in EXIT_CODES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="resolve and check a workflow config: every library default filled, "
                                      "every grid check run",
                       description="Resolve a workflow config (after schema validation) as every massl command "
                                   "reads it: full training/model sections per dataset, preprocess options, split "
                                   "sizes, probe options and the probed setting, the method table; every "
                                   "feasibility check of the grid runs first.")
    p.add_argument("--in", dest="input", required=True, metavar="FILE", help="the config, JSON or YAML; - = stdin")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="write the resolved config here (atomically, only when its content changes) instead of "
                        "printing it")
    p.set_defaults(handler=_handler("massl.config:cli_config"))

    p = sub.add_parser("describe", help="the method table (Tables 1-2 rows, the shared autoencoder)")
    p.add_argument("--json", action="store_true", help="as JSON: massl.methods.describe()")
    p.set_defaults(handler=_handler("massl.methods:cli_describe"))

    p = sub.add_parser("allocator", help="the memory allocator massl runs with (MASSL_ALLOCATOR)")
    p.add_argument("--shell-prefix", action="store_true",
                   help="print what to put before a shell command so it runs with that allocator (may be empty)")
    p.set_defaults(handler=_handler("massl.allocator:cli_allocator"))

    p = sub.add_parser("synth", help="write the built-in synthetic benchmark as NIfTI in the real layout")
    p.add_argument("--dataset", choices=SYNTHETIC_FORMATS, required=True, help="brats18 = tumor task, wmh17 = WMH task")
    p.add_argument("--out", required=True, help="output folder (the dataset root a real download would be)")
    p.add_argument("--n-cases", type=int, default=None, help="number of cases (default: 210 tumor, 60 WMH)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), default=None,
                   help="volume grid (z y x); default: the demo grid")
    p.add_argument("--preview", default=None, help="also write example slices with masks to this PNG")
    p.set_defaults(handler=_handler("massl.data.synthetic:cli_synth"))

    p = sub.add_parser("check-data", help="validate a dataset folder and report every problem found")
    p.add_argument("format", choices=FORMATS)
    p.add_argument("path", help="dataset root (e.g. MICCAI_BraTS_2018_Data_Training, the WMH training folder)")
    p.add_argument("--min-cases", type=int, default=None, help="fail if fewer cases are found")
    p.add_argument("--channel", default=None, help="nnU-Net: input channel name in dataset.json (e.g. FLAIR)")
    p.add_argument("--include-lgg", action="store_true", help="BraTS: also use the LGG cases")
    p.set_defaults(handler=_handler("massl.data.validate:cli_check_data"))

    p = sub.add_parser("preprocess", help="validate, preprocess and cache a dataset as arrays")
    p.add_argument("format", choices=FORMATS)
    p.add_argument("path", help="dataset root")
    p.add_argument("--out", required=True, help="output folder (cases.tsv + arrays)")
    p.add_argument("--config", default=None, help="resolved config (JSON/YAML) with the dataset's preprocess options")
    p.add_argument("--dataset", default=None, help="dataset key in the config (default: the format)")
    p.add_argument("--channel", default=None, help="nnU-Net: input channel name")
    p.add_argument("--include-lgg", action="store_true", help="BraTS: also use the LGG cases")
    p.add_argument("--min-cases", type=int, default=None, help="fail if fewer cases are found")
    p.set_defaults(handler=_handler("massl.data.preprocess:cli_preprocess"))

    p = sub.add_parser("split", help="write one Monte Carlo split (labeled pool / validation / test)")
    p.add_argument("--cases", required=True, help="cases.tsv from `massl preprocess`")
    p.add_argument("--dataset", required=True)
    p.add_argument("--rep", type=int, required=True, help="repetition (also the shuffle seed)")
    p.add_argument("--out", required=True, help="split JSON to write")
    p.add_argument("--config", default=None, help="resolved config with datasets.<key>.split sizes")
    p.set_defaults(handler=_handler("massl.data.splits:cli_split"))

    p = sub.add_parser("train", help="train one (dataset, setting, method, repetition), then test the best checkpoint",
                       description="Train a run and test its best checkpoint. Several methods (comma-separated) "
                                   "train one after the other in this process, sharing its start-up; --out then "
                                   "holds {method}, e.g. results/runs/brats18/50L70U/{method}/rep1.")
    p.add_argument("--config", required=True, help="resolved config (results/config.json)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--setting", required=True, help="e.g. 50L70U")
    p.add_argument("--method", required=True,
                   help="method id, e.g. massl_alter, or a comma-separated list (see docs/architecture.md)")
    p.add_argument("--rep", type=int, required=True)
    p.add_argument("--out", required=True, help="run folder ({method} is replaced by each method id)")
    p.add_argument("--split", required=True, help="split JSON from `massl split`")
    p.add_argument("--cases", required=True, help="cases.tsv from `massl preprocess` (the arrays beside it)")
    p.add_argument("--autoencoder", default=None, help="autoencoder run folder (pretraining methods)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.set_defaults(handler=_handler("massl.training.run:cli_train"))

    p = sub.add_parser("probe", help="linear-regression probe of the encoder levels (Table 3)")
    p.add_argument("--config", required=True)
    p.add_argument("--run", required=True, help="run folder with model.pt (and summary.json)")
    p.add_argument("--split", required=True, help="the run's split JSON (its test scans are probed)")
    p.add_argument("--cases", required=True, help="cases.tsv of the run's preprocessed dataset")
    p.add_argument("--out", required=True, help="TSV: level draw r2 n_voxels n_features score reason")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.set_defaults(handler=_handler("massl.evaluation.probe:cli_probe"))

    p = sub.add_parser("predict", help="segment NIfTI scans with a trained model; masks in the original space")
    p.add_argument("--model", required=True, help="model.pt of a run")
    p.add_argument("--input", required=True, help="a FLAIR .nii/.nii.gz file or a folder of them")
    p.add_argument("--out", required=True, help="output folder for <name>_mask.nii.gz")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="preprocessing to apply (default: the one the model was trained with)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.set_defaults(handler=_handler("massl.evaluation.predict:cli_predict"))

    p = sub.add_parser("bench", help="measure training/inference speed against this machine's ceiling")
    p.add_argument("--quick", action="store_true", help="fewer repeats, demo scale only where slow")
    p.add_argument("--out", default=None, help="also write the figures as JSON")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.set_defaults(handler=_handler("massl.bench:cli_bench"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        importlib.import_module("massl.allocator").apply()  # MASSL_ALLOCATOR, before the handler imports torch
        return int(args.handler(args))
    except MasslError as exc:
        print(f"massl {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # full disk, read-only folder, missing file: say which, no traceback
        print(f"massl {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FILE_SYSTEM
    except Exception:  # a bug, not the input: keep the traceback, and a code Python's 1 cannot be confused with
        traceback.print_exc()
        print(f"massl {args.command}: internal error (a bug in massl, not in your input): please report it "
              "with the traceback above", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
