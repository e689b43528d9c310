"""The ``export``, ``verify``, ``predict`` and ``register`` subcommands of ``medlora``: the bundle commands.

A thin shell over :mod:`medlora.review.build` (export), :mod:`medlora.bundle.manifest` (verify),
:mod:`medlora.bundle.predict` (predict) and :mod:`medlora.experiment.register` (register), kept apart
so that :mod:`medlora.cli` only has to call :func:`add_export_commands`; imports stay lazy so that
``medlora --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_export(args: argparse.Namespace) -> int:
    from .review.build import export_bundle
    from .review.keys import require_site_keys

    require_site_keys(args.run_id, args.tracking_uri)
    out = export_bundle(args.run_id, Path(args.out), tracking_uri=args.tracking_uri,
                        phi_check_against=[Path(p) for p in args.phi_check_against],
                        data_root=Path(args.data_root) if args.data_root else None, overwrite=args.force,
                        strict=args.strict)
    print(f"bundle written to {out} (open {out / 'report.html'}; check it with: medlora verify {out})")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from .bundle.manifest import verify_bundle

    result = verify_bundle(Path(args.bundle))
    if result.ok:
        print(f"{args.bundle}: OK, every file matches MANIFEST.sha256")
        return 0
    for kind, names in (("changed", result.changed), ("missing", result.missing), ("extra", result.extra)):
        for name in names:
            print(f"{kind}: {name}")
    print(f"{args.bundle}: FAILED ({result.describe()})")
    return 1


def _cmd_predict(args: argparse.Namespace) -> int:
    from .bundle.predict import Predictor

    if args.push:  # a URL with credentials is refused before any work
        from .io.dicomweb.client import server_url

        server_url(args.push)
    secret = None
    if args.secret_file:
        from .io.deid import load_site_key

        secret = load_site_key(Path(args.secret_file)).secret
    predictor = Predictor.from_paths([Path(b) for b in args.bundle], verify=not args.no_verify, merge=args.merge,
                                     secret=secret)
    res = predictor.predict_files([Path(i) for i in args.inputs])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    res.studies.to_csv(out, index=False)
    if args.samples:
        res.samples.to_csv(args.samples, index=False)
    for e in res.errors.itertuples():
        print(f"skipped {e.file}: {e.reason}", file=sys.stderr)
    unscored = int((res.studies["n_images"] == 0).sum())
    print(f"{len(res.studies) - unscored} studies ({len(res.samples)} images) scored by {len(args.bundle)} bundle(s) "
          f"→ {out}; {len(res.errors)} input(s) failed, {unscored} row(s) without a call")
    if args.push:  # the findings as DICOM SR + Secondary Capture, back to the PACS the studies came from
        from .review.push import push_predictions

        print(push_predictions(predictor, res, [Path(i) for i in args.inputs], args.push).describe())
    if res.failed and not args.keep_going:
        print("some inputs could not be read (rows with an empty call and an error); exit 1 "
              "(--keep-going exits 0 when the rest was scored)", file=sys.stderr)
        return 1
    return 0 if len(res.studies) > unscored or not res.failed else 1


def _cmd_register(args: argparse.Namespace) -> int:
    from .experiment.register import register_run

    uri, version = register_run(args.run_id, args.name, tracking_uri=args.tracking_uri,
                                bundle_dir=Path(args.bundle) if args.bundle else None)
    print(f"registered {args.name} version {version}; load it with mlflow.pyfunc.load_model({uri!r})")
    return 0


def add_export_commands(sub: argparse._SubParsersAction) -> None:
    """Add the bundle subcommands to ``medlora``'s subparsers."""
    e = sub.add_parser("export", help="write a self-contained review bundle of an MLflow run")
    e.add_argument("run_id", help="MLflow run id of a finished medlora run (keys made with a site secret)")
    e.add_argument("--out", required=True, help="bundle folder to create (must not exist unless --force)")
    e.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or MLflow's default)")
    e.add_argument("--phi-check-against", action="append", default=[], metavar="DIR",
                   help="DICOM files/folders whose identifiers must not appear in the bundle (default: the run's data root)")
    e.add_argument("--data-root", help="where the run's images are now, for the saliency examples (default: config's)")
    e.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    e.add_argument("--strict", action="store_true",
                   help="refuse a run whose test set has fewer than evaluate.min_per_class studies in a class "
                        "(default: warn, and say so at the top of report.html)")
    e.set_defaults(func=_cmd_export)

    v = sub.add_parser("verify", help="check a bundle's files against its MANIFEST.sha256")
    v.add_argument("bundle", help="bundle folder")
    v.set_defaults(func=_cmd_verify)

    p = sub.add_parser("predict", help="score new DICOM/NIfTI studies with one or more bundles (exit 1 when an "
                                       "input failed, unless --keep-going)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="DICOM files or folders")
    p.add_argument("--bundle", action="append", required=True, help="bundle folder (repeat for one score column each)")
    p.add_argument("--out", default="predictions.csv", help="study-level CSV to write (default predictions.csv)")
    p.add_argument("--samples", help="also write per-image scores to this CSV")
    p.add_argument("--merge", action="store_true", help="merge each LoRA adapter into its base for speed (same "
                                                        "scores); refused for linear-probe and full fine-tune bundles")
    p.add_argument("--secret-file", help="site secret of the study keys (default: $MEDLORA_SECRET_FILE, "
                                         "else ~/.config/medlora/site.key, as in ingest)")
    p.add_argument("--keep-going", action="store_true",
                   help="exit 0 when some inputs could not be read but others were scored (they still get no call)")
    p.add_argument("--no-verify", action="store_true", help="skip the MANIFEST.sha256 check of the bundles")
    p.add_argument("--push", metavar="URL", help="send each scored study's findings (Comprehensive SR) and saliency "
                                                 "(Secondary Capture) to this DICOMweb server by STOW-RS; credentials "
                                                 "from $MEDLORA_DICOMWEB_TOKEN, $MEDLORA_DICOMWEB_USER/PASSWORD or ~/.netrc")
    p.set_defaults(func=_cmd_predict)

    r = sub.add_parser("register", help="register a run as an MLflow pyfunc model with alias 'candidate'")
    r.add_argument("run_id", help="MLflow run id of a finished medlora run (keys made with a site secret)")
    r.add_argument("--name", required=True, help="registered model name")
    r.add_argument("--tracking-uri", help="MLflow tracking URI")
    r.add_argument("--bundle", help="an already exported bundle of that run (default: export one to a temp folder)")
    r.set_defaults(func=_cmd_register)
