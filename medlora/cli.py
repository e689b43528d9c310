"""The ``medlora`` command: a thin shell over the library's stage functions.

Imports are lazy so that ``medlora --help`` answers at once; torch, MONAI and MLflow load only
for the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import MedloraError

log = logging.getLogger("medlora")


class _DropMessages(logging.Filter):
    """Drops the records of one logger whose message starts with one of ``prefixes``.

    A filter on the logger that emits them (not a level): the same logger's other records still show.
    """

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


# log lines of other libraries that tell a medlora user nothing: {logger that emits them: message starts}
_DROPPED_LOG_LINES: dict[str, tuple[str, ...]] = {
    # every MONAI LoadImage(d) builds its optional GPU DICOM reader and says, each time, that it is not
    # there; medlora reads DICOM through pydicom (MedloraDicomReader)
    "monai.data.nvimgcodec_pydicom_plugin": ("nvImageCodec is not available",),
    # huggingface_hub's transient retries; a download that finally fails raises medlora's WeightsError
    "huggingface_hub.utils._http": ("Retrying in ", "Rate limited. Waiting "),
}


def _quiet_third_party() -> None:
    """Warnings and log lines of other libraries that tell a medlora user nothing, filtered once for every
    command (libraries are imported lazily, after this: filters sit on loggers that they then fetch by name)."""
    import os
    import warnings

    for name, prefixes in _DROPPED_LOG_LINES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(*prefixes))
    # MLflow sets its own loggers to INFO (own handler, no propagation) when imported, after _setup_logging;
    # its level comes from MLFLOW_LOGGING_LEVEL, which a user may still set
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    if "mlflow" in sys.modules:  # imported already (in-process callers of main)
        logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())

    # MONAI offers an optional GPU DICOM decoder on every import; medlora reads through pydicom
    warnings.filterwarnings("ignore", message=".*NvImgCodecPydicomReader.*", category=UserWarning)
    warnings.filterwarnings("ignore", message=".*nvimgcodec.*", category=UserWarning)
    # MLflow's schema hints concern model signatures of its own flavours, not medlora's inputs
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="mlflow")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow", "urllib3", "filelock", "PIL", "matplotlib", "timm", "monai", "huggingface_hub",
                  "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _cmd_synth(args: argparse.Namespace) -> int:
    from .config import SynthConfig
    from .io.synth import write_phantoms

    res = write_phantoms(Path(args.out), SynthConfig(patients=args.patients, images_per_patient=args.images,
                                                     size=args.size, seed=args.seed))
    print(f"wrote {res.studies} studies ({res.abnormal_studies} abnormal), {res.images} DICOM images, labels {res.labels_csv}")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from .io.medmnist import convert_medmnist

    res = convert_medmnist(args.name, Path(args.out), npz=Path(args.npz) if args.npz else None, size=args.size,
                           fmt=args.format, limit=args.limit, card=Path(args.card) if args.card else None,
                           keep_duplicates=args.keep_duplicates)
    print(f"wrote {res.images} {res.format} files ({', '.join(f'{k} {v}' for k, v in res.counts.items())}) "
          f"in {res.seconds:.1f} s; labels {res.labels_csv}")
    return 0


def _load(args: argparse.Namespace, *extra: str):
    from .config import load_config

    return load_config(args.config, [*args.set, *extra])


def _cmd_run(args: argparse.Namespace) -> int:
    import shutil

    from pipelines import pipeline

    from .experiment.preflight import preflight

    cfg = _load(args)
    preflight(cfg)
    run = pipeline(cfg.pipeline)
    if cfg.pretrain is not None:  # adapt the base medlora pretrains (once) on the training images
        from .experiment.pretrain import with_pretrained_base

        cfg = with_pretrained_base(cfg)
    out = Path(args.out) if args.out else Path("runs") / cfg.data.name
    created = not out.exists()
    try:
        summary = run(cfg, out)
    except BaseException:
        if created and out.is_dir() and not any(out.rglob("*")):  # nothing worth keeping: no empty folder left
            shutil.rmtree(out, ignore_errors=True)
        raise
    if summary.run_id:  # under torchrun, rank 0 speaks for the run
        print(summary.describe())
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from .io.prepare import prepare_dataset

    cfg = _load(args, *(["data.strict=true"] if args.strict else []))
    out = Path(args.out) if args.out else Path("runs") / cfg.data.name
    data = prepare_dataset(cfg.data, out)  # writes manifest.csv and ingest_report.csv before any check fails
    report = data.skipped
    print(f"{len(data.manifest)} files in the manifest ({out / 'manifest.csv'}, "
          f"{data.manifest['patient_key'].nunique()} patients), {len(report)} report rows "
          f"({out / 'ingest_report.csv'}); split file {data.split_file}")
    for row in report.head(20).itertuples():  # local console: paths lead back to the files
        print(f"  {row.status} {row.path or '<labels>'}: {row.reason}")
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from .experiment.pretrain import run_pretrain

    summary = run_pretrain(_load(args), Path(args.out) if args.out else None)
    print(summary.describe())
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from .experiment.validate import run_validate

    cfg = _load(args)
    out = Path(args.out) if args.out else Path("runs") / f"validate-{Path(args.bundle).name}-{cfg.data.name}"
    summary = run_validate(Path(args.bundle), cfg, out, args.calibrate_on, args.strict, args.push)
    m = summary.metrics
    print(f"validated {args.bundle} on {summary.n_studies} site studies: test AUROC {m.get('test_auroc', float('nan')):.3f} "
          f"[{m.get('test_auroc_delong_ci_low', float('nan')):.3f}, {m.get('test_auroc_delong_ci_high', float('nan')):.3f}], "
          f"sensitivity {m.get('test_sensitivity', float('nan')):.3f}, specificity {m.get('test_specificity', float('nan')):.3f} "
          f"at the shipped threshold {m.get('threshold', float('nan')):.4g}")
    if "familiarity_flagged_fraction" in m:
        print(f"unfamiliar studies (outside what the adapter was trained on): {m['familiarity_flagged_fraction']:.0%}")
    print(f"report: {out / 'validation.html'}" + (f"; MLflow run {summary.run_id}" if summary.run_id else ""))
    if summary.adjusted_bundle is not None:
        print(f"site-adjusted bundle: {summary.adjusted_bundle}")
    if summary.pushed is not None:
        print(summary.pushed.describe())
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .sweep.compare import compare

    print(compare(args.target, args.tracking_uri))
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    from .io.dicomweb.pull import (
        ACCESSION_COLUMNS,
        STUDY_UID_COLUMNS,
        PullQuery,
        parse_filters,
        pull,
        read_id_column,
    )

    query = PullQuery(args.date_from or "", args.date_to or "", args.modality or "",
                      read_id_column(Path(args.accessions), ACCESSION_COLUMNS) if args.accessions else [],
                      read_id_column(Path(args.study_uids), STUDY_UID_COLUMNS) if args.study_uids else [],
                      parse_filters(args.filter))
    print(pull(args.url, Path(args.out), query, workers=args.workers).describe())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="medlora", description="LoRA adaptation of vision transformers to medical imaging studies.")
    p.add_argument("--version", action="version", version=f"medlora {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write the synthetic phantom DICOM dataset")
    s.add_argument("--out", required=True, help="folder to write the studies and labels.csv into")
    s.add_argument("--patients", type=int, default=60)
    s.add_argument("--images", type=int, default=3, help="images (slices) per patient")
    s.add_argument("--size", type=int, default=64, help="image rows/columns")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_synth)

    d = sub.add_parser("datasets", help="write a public dataset as a study folder medlora ingests")
    dsub = d.add_subparsers(dest="source", required=True)
    m = dsub.add_parser("medmnist", help="a MedMNIST npz → DICOM (2D) or NIfTI (3D) + labels.csv with the official split")
    m.add_argument("name", help="any MedMNIST set (pathmnist, chestmnist, ..., organmnist3d, ...; medlora.io.medmnist_info)")
    m.add_argument("--out", required=True, help="folder to write the images, labels.csv and medmnist_source.json into")
    m.add_argument("--npz", help="a local npz (else downloaded with the medmnist package, when installed and online)")
    m.add_argument("--size", type=int, choices=(28, 64, 128, 224), help="image size (default: the npz's; 28 to download)")
    m.add_argument("--format", choices=("dicom", "nifti"), help="default: dicom for 2D sets, nifti for 3D sets")
    m.add_argument("--limit", type=int, help="keep the first N images of each split, stratified by label")
    m.add_argument("--card", help="data card with the class names (default data_cards/<name>.md)")
    m.add_argument("--keep-duplicates", action="store_true",
                   help="keep images whose exact pixels repeat another split's (ingest's leakage audit will refuse them)")
    m.set_defaults(func=_cmd_datasets)

    for name, func, help_ in (("run", _cmd_run, "run a config's pipeline end to end"),
                              ("ingest", _cmd_ingest, "scan, label, split and audit a dataset; write its manifest"),
                              ("pretrain", _cmd_pretrain, "masked-autoencoder pretraining of the base on unlabelled "
                                                          "studies (a labelled dataset's training split only)")):
        r = sub.add_parser(name, help=help_)
        r.add_argument("config", help="YAML config file")
        r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value (repeatable)")
        r.add_argument("--out", help="output folder (default runs/<dataset name>; for pretrain "
                                     "<pretrain.out>/<dataset name>-<data and settings key>)")
        if name == "ingest":
            r.add_argument("--strict", action="store_true", help="fail if any input is skipped")
        r.set_defaults(func=func)
    v = sub.add_parser("validate", help="validate a received bundle on this site's labelled studies, at its shipped "
                                         "operating point (metrics, intervals, internal vs external, familiarity)")
    v.add_argument("bundle", help="the bundle folder (medlora export)")
    v.add_argument("config", help="the site's YAML config: its data section names the labelled studies")
    v.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value (repeatable)")
    v.add_argument("--out", help="output folder (default runs/validate-<bundle>-<dataset name>)")
    v.add_argument("--calibrate-on", metavar="FRACTION|SPLIT",
                   help="refit threshold and calibration on this share of the site's patients (or this split of "
                        "data.split) and evaluate on the others only; writes an adjusted bundle")
    v.add_argument("--strict", action="store_true", help="refuse a site set below evaluate.min_per_class per class")
    v.add_argument("--push", metavar="URL", help="also send each study's findings (Comprehensive SR) and saliency "
                                               "(Secondary Capture) back to the PACS the studies came from (STOW-RS)")
    v.set_defaults(func=_cmd_validate)
    pl = sub.add_parser("pull", help="pull studies from a DICOMweb server (PACS) into a local cache that ingest reads "
                                     "(data.root); credentials from $MEDLORA_DICOMWEB_TOKEN, "
                                     "$MEDLORA_DICOMWEB_USER/PASSWORD or ~/.netrc, never in the URL")
    pl.add_argument("url", help="DICOMweb base URL, e.g. https://pacs.example.org/dicom-web")
    pl.add_argument("--out", required=True, help="cache folder (holds identifiable images: keep it with the data)")
    pl.add_argument("--from", dest="date_from", metavar="DATE", help="first study date (YYYY-MM-DD)")
    pl.add_argument("--to", dest="date_to", metavar="DATE", help="last study date (YYYY-MM-DD)")
    pl.add_argument("--modality", help="modality in the study (e.g. CT)")
    pl.add_argument("--accessions", metavar="CSV", help="CSV with an AccessionNumber column (or one column)")
    pl.add_argument("--study-uids", metavar="CSV", help="CSV with a StudyInstanceUID column (e.g. the labels CSV)")
    pl.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                    help="any QIDO-RS attribute filter by DICOM keyword (repeatable)")
    pl.add_argument("--workers", type=int, default=4, help="parallel downloads (default 4)")
    pl.set_defaults(func=_cmd_pull)
    c = sub.add_parser("compare", help="print the summary table of few-shot sweeps (mean ± sd over seeds)")
    c.add_argument("target", metavar="EXPERIMENT_OR_RUN", help="experiment name (every sweep in it) or a sweep's parent run id")
    c.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else MLflow's default store)")
    c.set_defaults(func=_cmd_compare)

    from .cli_bundle import add_export_commands  # export, verify, predict, register

    add_export_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    _quiet_third_party()
    try:
        if getattr(args, "tracking_uri", None):
            from .tracking.store import check_store

            check_store(args.tracking_uri)
        return args.func(args)
    except MedloraError as err:
        print(f"medlora: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a tracking store that is down or refuses the credentials: say so, plainly
        from .tracking.store import unreachable_message

        message = unreachable_message(err, getattr(args, "tracking_uri", None))
        if message is None:
            raise
        print(f"medlora: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medlora: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
