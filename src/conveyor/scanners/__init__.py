"""Security scanners: one module per scanner, one shared signature, one registry table.

``conveyor scan`` runs them (``nox -s scan`` is the usual way in), merges their findings into
one model, applies the policy of ``[tool.conveyor.scan]`` and writes ``reports/scan/``.
``conveyor advisories`` serves or queries the offline OSV mirror that pip-audit uses.

Modules: :mod:`~conveyor.scanners.model` (finding, status), :mod:`~conveyor.scanners.policy`,
:mod:`~conveyor.scanners.gate`, :mod:`~conveyor.scanners.report`,
:mod:`~conveyor.scanners.runner`, :mod:`~conveyor.scanners.registry` and one module per scanner.
The heavy imports happen inside the handlers, so the CLI starts fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from conveyor.console import console
from conveyor.scanners.model import CONTEXTS


def cmd_scan(args: argparse.Namespace) -> int:
    from conveyor.scanners import gate, policy, registry, report, runner  # noqa: PLC0415

    root = Path(args.project).resolve() if args.project else policy.find_project()
    rules = policy.load(root, registry.REGISTRY)
    if args.list:
        for spec in registry.REGISTRY:
            scanner = rules.scanner(spec.name)
            state = "required" if scanner.required else "optional"
            state += "" if scanner.enabled else ", disabled"
            state += ", needs --artifacts" if spec.needs_artifacts else ""
            options = ", ".join(f"{k}={v!r}" for k, v in scanner.options.items())
            console.say(f"{spec.name:<16} {state:<30} {spec.description}")
            if options:
                console.say(f"{'':<16} {options}")
        return 0
    context = args.context or policy.default_context()
    artifacts = Path(args.artifacts).resolve() if args.artifacts else _built_release(root)
    if artifacts is not None and not args.artifacts:
        console.say(f"Scanning the images of {artifacts.name} too (built by `nox -s image`)")
    outcome = runner.scan(
        rules,
        context=context,
        names=args.scanners,
        artifacts=artifacts,
        reports_dir=Path(args.reports).resolve() if args.reports else None,
        say=console.say,
    )
    for line in report.console_table(outcome.runs, outcome.verdict):
        console.say(line)
    for name, entry in outcome.images.items():
        verdict = "passed" if entry["passed"] else "FAILED"
        console.say(f"  image {name}: scan {verdict} → recorded in {artifacts}/manifest.json")
    shown = ", ".join(
        str(p.relative_to(root) if p.is_relative_to(root) else p) for p in outcome.reports.values()
    )
    console.say(f"Reports: {shown}")
    if not outcome.verdict.passed:
        reasons = outcome.verdict.failures
        raise gate.ScanGateFailed(
            f"security gate failed in context {context}: {reasons[0]}"
            + (f" (+{len(reasons) - 1} more, see the summary)" if len(reasons) > 1 else "")
        )
    return 0


def cmd_advisories_serve(args: argparse.Namespace) -> int:
    from conveyor.scanners import advisories  # noqa: PLC0415

    root = Path.cwd()
    path = Path(args.dir) if args.dir else advisories.default_db(root)
    db = advisories.AdvisoryDB.load(path)
    server = advisories.MirrorServer(db, args.host, args.port)
    console.say(
        f"Serving {db.count} advisories for {len(db.by_package)} PyPI projects from {path} "
        f"at {server.url}"
    )
    console.say(f"  use: pip-audit -s osv --osv-url {server.url} …  (Ctrl-C stops)")
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def cmd_advisories_query(args: argparse.Namespace) -> int:
    from conveyor.scanners import advisories  # noqa: PLC0415

    path = Path(args.db) if args.db else advisories.default_db(Path.cwd())
    found = advisories.AdvisoryDB.load(path).query(args.package, args.version)
    if args.json:
        print(json.dumps({"vulns": found}, indent=2, default=str))
        return 0
    for advisory in found:
        aliases = ", ".join(advisory.get("aliases") or [])
        console.say(f"{advisory['id']}" + (f" ({aliases})" if aliases else ""))
    if not found:
        console.say(f"{args.package} {args.version}: no known advisories in {path}")
    return 0


def _built_release(root: Path) -> Path | None:
    """dist/<version>/ of the working tree when its images exist: a release is scanned whole.

    CI runs `nox -s build image scan` in one job; without this the images would go unscanned
    and a gated environment would refuse them.
    """
    from conveyor import artifacts, config  # noqa: PLC0415
    from conveyor.errors import ConveyorError  # noqa: PLC0415

    try:
        folder = artifacts.dist_folder(config.load(root / "deploy.toml"), None)
        manifest = artifacts.read_manifest(folder)
    except ConveyorError:
        return None
    return folder.resolve() if manifest.get("images") else None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``scan`` and ``advisories`` commands to conveyor's CLI."""
    scan = sub.add_parser(
        "scan",
        help="Run the security scanners and apply the gate policy.",
        description="Run the security scanners, merge their findings into one model, apply "
        "[tool.conveyor.scan] from pyproject.toml and write reports/scan/ "
        "(results.sarif, findings.json, summary.md). Exit 1 when the gate fails.",
    )
    scan.add_argument(
        "scanners", nargs="*", metavar="SCANNER",
        help="run only these scanners (default: every enabled one; see --list)",
    )  # fmt: skip
    scan.add_argument(
        "--context", choices=CONTEXTS,
        help="what the scan gates: pr warns when a required scanner is unavailable, main and "
        "production fail (default: from GITHUB_EVENT_NAME/GITHUB_REF in Actions, pr locally, "
        "or $CONVEYOR_SCAN_CONTEXT)",
    )  # fmt: skip
    scan.add_argument("--project", help="project to scan (default: nearest pyproject.toml)")
    scan.add_argument(
        "--artifacts", metavar="DIST_DIR",
        help="also scan the images recorded in DIST_DIR/manifest.json (e.g. dist/1.4.0) and "
        "write each image's result into that manifest",
    )  # fmt: skip
    scan.add_argument("--reports", help="report folder (default: [tool.conveyor.scan] reports)")
    scan.add_argument("--list", action="store_true", help="list the scanners and their policy")
    scan.set_defaults(handler=cmd_scan)

    adv = sub.add_parser("advisories", help="Serve or query the offline OSV advisory mirror.")
    adv_sub = adv.add_subparsers(dest="advisories_command", required=True, metavar="ACTION")
    serve = adv_sub.add_parser(
        "serve",
        help="Answer OSV /v1/query from a folder of OSV advisories (for pip-audit --osv-url).",
    )
    serve.add_argument(
        "dir", nargs="?",
        help="advisory folder (default: $CONVEYOR_ADVISORY_DB, else "
        "../shared/advisories/pypa-advisory-database)",
    )  # fmt: skip
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    serve.set_defaults(handler=cmd_advisories_serve)
    query = adv_sub.add_parser("query", help="List the advisories affecting PACKAGE==VERSION.")
    query.add_argument("package")
    query.add_argument("version")
    query.add_argument("--db", help="advisory folder (default as for serve)")
    query.add_argument("--json", action="store_true", help="print the OSV records")
    query.set_defaults(handler=cmd_advisories_query)
