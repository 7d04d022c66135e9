"""Command line: ``python -m cityfactory.cli <command>`` (``make run`` uses ``run``).

- ``run SCENARIO... [--history | --start D --end D] [--stages ...] [--retrain auto|always|never] [--full-refresh] [--trials N]``: one full DAG run
  per scenario, one after the other in this process (Airflow's ``dag.test``), each followed by its
  summary from its ledger.
- ``replay-serving SCENARIO --start D [--end D]``: the city's consumers replayed: the days' rows
  asked of the local fleet (the nodes log what they served; the next run's monitor collects it).
- ``summary SCENARIO RUN_ID``: counts and wall time per task of a past run.
- ``ui [--port N] [--mlflow-port M]``: Airflow's UI and services, and the MLflow UI, until Ctrl-C; unpauses
  the DAGs (no catch-up: the first run is the next scheduled one) and says when each runs next.
- ``verify-bundle PREFIX [--public-key PEM]``: refuse a bundle whose signature or checksums fail.
- ``verify-audit [--from-witness]``: check the audit log against its checkpoints and the witness.
- ``audit-proof --entry N | --since-size M``: inclusion or consistency proof (RFC 6962), checked.
- ``fetch-data SCENARIO``: make sure the scenario's dataset is present and verified.
- ``edge-token FLEET``: a fleet's admin token, for its nodes' admin API (``Authorization: Bearer``);
  ``rotate-edge-token FLEET``: a new one for every node of the fleet, all or none.
- ``new-scenario NAME --from FILE... [--target C] [--timezone Z] [--series C] [--domain D]``: every file of a
  new scenario drafted from sample data (CSV files, or a folder of images in class subfolders) by
  the kind of model that reads such data, then validated.
- ``sync-access --passwords FILE``: the departments' roles (operators, viewers: each over its own
  scenarios' DAGs) and a login per role written into Airflow's FAB tables (``ui`` does it at start);
  ``sync-mlflow-access --passwords FILE``: the same logins on an MLflow server with basic auth
  (``MLFLOW_TRACKING_URI``), each scenario's experiment and registered model granted to its
  department, and the pipeline's service account.
- ``validate [SCENARIO ...]``: check scenarios whole (YAML, model spec, fleet, suites, dbt
  selection, dataset pins) before any run; every problem names its file and key.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from cityfactory.config.scenarios import ScenarioError, get_scenario
from cityfactory.pipeline.stages import RETRAIN_CHOICES
from cityfactory.settings import REPO_ROOT, get_settings


def _print_summary(scenario: str, run_id: str, tasks: bool = True) -> None:
    from cityfactory.governance.ledger import RunLedger
    from cityfactory.governance.summary import (
        format_failures,
        format_gates,
        format_layers,
        format_monitoring,
        format_summary,
        format_training,
        layer_rows,
        task_summary,
    )
    from cityfactory.storage.lake import open_lake

    entries = RunLedger(open_lake(), scenario, run_id).entries()
    if tasks:
        print(f"Run {run_id} of {scenario}\n" + format_summary(task_summary(entries)))
    print("Rows per layer: " + format_layers(layer_rows(entries)))
    for section in (format_gates(entries), format_failures(entries)):
        if section:
            print(section)
    if monitoring := format_monitoring(entries):
        print(monitoring)
    if training := format_training(entries):
        print(training)


def cmd_run(args: argparse.Namespace) -> int:
    """Each scenario's run in turn, in this one process: Airflow, dbt, GX, torch and MLflow are
    imported and the DAG file parsed once for all of them. A failed run does not stop the next."""
    scenarios = [get_scenario(name) for name in args.scenarios]  # every name checked before anything runs
    try:
        succeeded = [_run_scenario(scenario, args) for scenario in scenarios]
    except DagFileError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0 if all(succeeded) else 1


class DagFileError(Exception):
    """The scenarios' DAG file does not load: no run can start."""


@functools.cache
def _scenario_dags():
    """The scenarios' DAG file, parsed once per process (its log lines go where output goes then)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "scenario_pipelines.py"))
    if bag.import_errors:
        raise DagFileError(f"the DAG file does not load: {bag.import_errors}")
    return bag


def _run_scenario(scenario, args: argparse.Namespace) -> bool:
    """One run of the scenario's DAG (``dag.test``): progress lines, then its summary; whether it succeeded."""
    from airflow.utils.state import DagRunState

    from cityfactory.governance.ledger import safe_run_id
    from cityfactory.ingestion import replay
    from cityfactory.pipeline.stages import STAGES
    from cityfactory.progress import TaskProgress, output_to

    conf: dict = {"stages": args.stages or list(STAGES), "retrain": args.retrain, "full_refresh": args.full_refresh,
                  "search_trials": args.trials}
    if args.history:
        start, end = replay.history_interval(scenario)
        conf.update(data_interval_start=start.isoformat(), data_interval_end=end.isoformat())
    elif args.start or args.end:
        conf.update(data_interval_start=args.start, data_interval_end=args.end)
    started = dt.datetime.now(dt.UTC)
    log_file = get_settings().home / "logs" / f"run-{scenario.name}-{started:%Y%m%dT%H%M%S}.log"
    days = f"{conf['data_interval_start']} .. {conf['data_interval_end']}" if "data_interval_start" in conf else "yesterday"
    print(f"\n{scenario.dag_id}: days {days}, stages {', '.join(conf['stages'])}\n  full logs: {log_file}", flush=True)
    with contextlib.ExitStack() as fleet:
        with output_to(log_file) as terminal:
            dag = _scenario_dags().get_dag(scenario.dag_id)
            if {"rollout", "monitor"} & set(conf["stages"]):  # up until the summary has read what the nodes serve
                fleet.enter_context(_local_fleet(scenario))
            progress = TaskProgress(dag, started, terminal)
            progress.start()
            try:
                run = dag.test(run_conf=conf)
            finally:
                progress.stop()
        _print_summary(scenario.name, run.run_id, tasks=False)
        if "rollout" in conf["stages"]:
            _print_fleet(scenario)
    lake = get_settings().lake_uri
    print(f"State: {run.state}. Layers in {lake}/{{raw,bronze,quarantine,gold}}/{scenario.name}/; "
          f"ledger, quality results and report in {lake}/governance/{scenario.name}/{safe_run_id(run.run_id)}/")
    _print_governance(scenario.name, run.run_id)
    return run.state == DagRunState.SUCCESS


def cmd_replay_serving(args: argparse.Namespace) -> int:
    from cityfactory.edge.consumers import serve_days

    scenario = get_scenario(args.scenario)
    first = dt.date.fromisoformat(args.start)
    last = dt.date.fromisoformat(args.end) if args.end else first
    with _local_fleet(scenario):
        answered = serve_days(scenario, first, last)
    print(f"{scenario.name}: {sum(answered.values())} rows of {first} .. {last} answered "
          f"({', '.join(f'{n} {c}' for n, c in sorted(answered.items()))}); the next run's monitor collects them")
    return 0


def _print_governance(scenario: str, run_id: str) -> None:
    """Where the run's compliance report is, and whether the audit trail verifies."""
    from cityfactory.governance import audit
    from cityfactory.governance.ledger import Kind, RunLedger, last_of
    from cityfactory.security.signing import audit_public_key_pem
    from cityfactory.storage.lake import open_lake

    lake = open_lake()
    governed = last_of(RunLedger(lake, scenario, run_id).current(), Kind.GOVERNED)
    if governed is None or governed["status"] != "success":
        print("  report      none: the governance task did not finish (see its log)")
        return
    try:
        verified = audit.verify(lake, audit_public_key_pem())
        trail = f"audit trail: {verified.entries} entries; log, checkpoints and witness verify"
    except (audit.AuditError, FileNotFoundError) as exc:
        trail = f"audit trail DOES NOT VERIFY: {exc}"
    print(f"  report {governed['details']['report']}; {trail}")


def _local_fleet(scenario):
    from cityfactory.edge.fleet import LocalFleet

    return LocalFleet.for_scenario(scenario)


def _print_fleet(scenario) -> None:
    from cityfactory.edge.fleet import edge_token, load_fleet
    from cityfactory.rollout.controller import snapshot

    fleet = load_fleet(scenario.rollout.fleet)
    serving = snapshot(fleet, edge_token(scenario.rollout.fleet))
    print("Edge fleet: " + ", ".join(f"{n.id} ({n.district}) v{serving[n.id]}" for n in fleet.nodes))


def cmd_summary(args: argparse.Namespace) -> int:
    _print_summary(args.scenario, args.run_id)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from cityfactory import services

    settings = get_settings()
    from cityfactory.access.logins import login_passwords
    from cityfactory.access.roles import ADMIN_LOGIN, city_logins
    from cityfactory.config.domains import load_domains

    passwords = settings.home / "airflow-passwords.json"
    logins, new = login_passwords(passwords, city_logins(load_domains().domains))
    log_file = settings.home / "logs" / "airflow-standalone.log"
    url = f"http://127.0.0.1:{args.port}"
    mlflow_url = f"http://127.0.0.1:{args.mlflow_port}"
    import signal

    from cityfactory.config.scenarios import load_scenarios

    def stop_on_term(*_):  # `kill` or a supervisor's TERM stops the services like Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_term)
    scenarios = load_scenarios(settings.scenarios_dir)
    fleets = contextlib.ExitStack()
    for scenario in scenarios:
        fleets.enter_context(_local_fleet(scenario))
    process = services.start_airflow(args.port, passwords, log_file)
    mlflow = services.start_mlflow_ui(args.mlflow_port, log_file.with_name("mlflow-ui.log"))
    print(f"Starting Airflow (api-server, scheduler, dag-processor, triggerer) and MLflow; logs in {log_file.parent}", flush=True)
    try:
        services.wait_healthy(url, process)
        services.wait_for_url(mlflow_url, mlflow)
        zones = {s.dag_id: s.timezone for s in scenarios} | {"governance_maintenance": "UTC"}
        for dag_id, next_run in services.unpause(url, logins[ADMIN_LOGIN], list(zones), process).items():
            print(f"{dag_id}: unpaused; next scheduled run {_local_time(next_run, zones[dag_id])}")
        if not settings.retention_enforced:
            print("governance_maintenance: retention is a dry run (set CITYFACTORY_RETENTION_ENFORCED=true to delete)")
        print(f"\nAirflow UI: {url}\n  user: {ADMIN_LOGIN} (the platform team)\n  password: {logins[ADMIN_LOGIN]}  (generated into {passwords})")
        if new:  # printed once, when generated
            print("  a login per department role (<department>-operator triggers and approves its scenarios, "
                  "<department>-viewer reads them):")
            print("\n".join(f"    {name}: {logins[name]}" for name in new if name != ADMIN_LOGIN))
        else:
            print(f"  a login per department role (<department>-operator, <department>-viewer): see {passwords}")
        print(f"MLflow UI:  {mlflow_url}  (experiments cityfactory/<scenario>; Models tab: the registry)")
        print("Trigger a scenario DAG from its page (the form lets you pick dates and stages). Ctrl-C stops.")
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        # a second Ctrl-C (or TERM) must not cut the shutdown short and leave Airflow running
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("Stopping Airflow, MLflow and the edge nodes ...", flush=True)
        services.stop(mlflow)
        services.stop(process)
        fleets.close()
    return 0


def _local_time(iso: str | None, zone: str) -> str:
    if iso is None:
        return "none planned"
    return dt.datetime.fromisoformat(iso).astimezone(ZoneInfo(zone)).strftime(f"%Y-%m-%d %H:%M {zone}")


def cmd_verify_bundle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cityfactory.compression import bundle
    from cityfactory.security.signing import public_key_pem
    from cityfactory.storage.lake import open_lake

    lake = open_lake(args.lake)
    public = Path(args.public_key).read_bytes() if args.public_key else public_key_pem()
    try:
        manifest = bundle.verify(bundle.read(lake, args.prefix), public)
    except bundle.BundleError as exc:
        print(f"REFUSED {lake.uri_for(args.prefix)}: {exc}", file=sys.stderr)
        return 1
    print(f"OK {lake.uri_for(args.prefix)}: {manifest['registered_model']} version {manifest['model_version']} "
          f"({manifest['variant']}), {len(manifest['files'])} file(s) verified, key {manifest['signing_key_id']}")
    return 0


def _audit_public_key(args: argparse.Namespace) -> bytes:
    from pathlib import Path

    from cityfactory.security.signing import audit_public_key_pem

    return Path(args.public_key).read_bytes() if args.public_key else audit_public_key_pem()


def cmd_verify_audit(args: argparse.Namespace) -> int:
    from cityfactory.governance import audit
    from cityfactory.storage.lake import open_lake

    lake = open_lake(args.lake)
    try:
        result = audit.verify(lake, _audit_public_key(args), full=not args.from_witness)
    except (audit.AuditError, FileNotFoundError) as exc:
        print(f"BROKEN {lake.uri_for('audit')}: {exc}", file=sys.stderr)
        return 1
    print(f"OK {lake.uri_for('audit')}: {result.entries} entries, sealed through {result.sealed_through} "
          f"({result.read} entries read; witness {audit.witness_path(lake)})")
    return 0


def cmd_audit_proof(args: argparse.Namespace) -> int:
    import json

    from cityfactory.governance import audit
    from cityfactory.storage.lake import open_lake

    lake = open_lake(args.lake)
    try:
        if args.entry is not None:
            proof = audit.prove_inclusion(lake, _audit_public_key(args), args.entry)
        else:
            proof = audit.prove_consistency(lake, _audit_public_key(args), args.since_size)
    except (audit.AuditError, FileNotFoundError) as exc:
        print(f"NO PROOF: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(proof, indent=1))
    return 0


def cmd_fetch_data(args: argparse.Namespace) -> int:
    from cityfactory.ingestion.datasets import source_file

    scenario = get_scenario(args.scenario)
    for spec in scenario.source.files:
        print(source_file(scenario.source, spec))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from cityfactory.pipeline.preflight import validate_scenarios

    directory = get_settings().scenarios_dir
    paths = [directory / f"{name}.yaml" for name in args.scenarios] or sorted(directory.glob("*.yaml"))
    found = validate_scenarios(paths, check_dbt=not args.no_dbt)
    for name, problems in found.items():
        if problems:
            print(f"FAIL {name}" + "".join(f"\n     - {p}" for p in problems))
    if passed := [name for name, problems in found.items() if not problems]:
        print(f"OK   {', '.join(passed)}")
    return 1 if any(found.values()) else 0


def cmd_new_scenario(args: argparse.Namespace) -> int:
    from cityfactory.scaffold.new_scenario import new_scenario

    made = new_scenario(args.name, args.sources, target=args.target, timezone=args.timezone, series=args.series,
                        domain=args.domain)
    root = REPO_ROOT
    print(f"Drafted {made.name} ({made.kind}):" + "".join(
        f"\n  {p.relative_to(root) if p.is_relative_to(root) else p}" for p in made.written))
    if made.notes:
        print("Guessed (see the lines marked 'decide:' in the files):" + "".join(f"\n  - {n}" for n in made.notes))
    if made.problems:
        print(f"FAIL {made.name}" + "".join(f"\n     - {p}" for p in made.problems))
        return 1
    print(f"OK   {made.name}. Next: python -m cityfactory.cli run {made.name} --history")
    return 0


def cmd_edge_token(args: argparse.Namespace) -> int:
    """A fleet's admin token, as its nodes and the controller read it (for curl)."""
    from cityfactory.edge.fleet import edge_token, load_fleet

    load_fleet(args.fleet)  # a fleet that exists: a typo must not mint a token
    print(edge_token(args.fleet))
    return 0


def cmd_rotate_edge_token(args: argparse.Namespace) -> int:
    from cityfactory.edge.fleet import load_fleet, rotate_edge_token, token_connection

    load_fleet(args.fleet)
    try:
        rotated = rotate_edge_token(args.fleet)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"fleet {args.fleet}: {rotated} node(s) take the new admin token; the old one is refused. It is kept in "
          f"the Airflow connection {token_connection(args.fleet)} if there is one, else in the keys folder.")
    return 0


def cmd_sync_access(args: argparse.Namespace) -> int:
    from cityfactory.access.sync import sync_access

    for login in sync_access(args.passwords):
        print(f"login {login}: password generated into {args.passwords}")
    return 0


def cmd_sync_mlflow_access(args: argparse.Namespace) -> int:
    from cityfactory.access.mlflow_access import sync_mlflow_access
    from cityfactory.config.domains import load_domains

    for login in sync_mlflow_access(args.passwords, list(load_domains().domains)):
        print(f"login {login}: password generated into {args.passwords}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cityfactory", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run scenarios' DAGs once each, in-process, one after the other")
    run.add_argument("scenarios", nargs="+", metavar="scenario")
    run.add_argument("--history", action="store_true", help="the dataset's whole history (bulk run)")
    run.add_argument("--start", help="first day, YYYY-MM-DD")
    run.add_argument("--end", help="last day (inclusive), YYYY-MM-DD")
    run.add_argument("--stages", nargs="+", help="stages to run (default: all)")
    run.add_argument("--retrain", choices=RETRAIN_CHOICES, default="auto", help="overrule the retraining rules")
    run.add_argument("--trials", type=int, default=None, help="the model search's budget in trials (default: the spec's)")
    run.add_argument("--full-refresh", action="store_true", help="rebuild every dbt model from all history")
    run.set_defaults(func=cmd_run)
    serving = sub.add_parser("replay-serving", help="replay the city's consumers: ask the local fleet for some days")
    serving.add_argument("scenario")
    serving.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    serving.add_argument("--end", help="last day (inclusive; default: the first)")
    serving.set_defaults(func=cmd_replay_serving)
    summary = sub.add_parser("summary", help="counts and wall time per task of a run")
    summary.add_argument("scenario")
    summary.add_argument("run_id")
    summary.set_defaults(func=cmd_summary)
    ui = sub.add_parser("ui", help="serve the Airflow UI on the embedded stack")
    ui.add_argument("--port", type=int, default=8080)
    ui.add_argument("--mlflow-port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)
    verify = sub.add_parser("verify-bundle", help="check an edge bundle's signature and checksums")
    verify.add_argument("prefix", help="bundle folder in the lake, e.g. bundles/<scenario>/<version>")
    verify.add_argument("--lake", help="lake URI (default: CITYFACTORY_LAKE_URI)")
    verify.add_argument("--public-key", help="PEM file (default: the embedded stack's public key)")
    verify.set_defaults(func=cmd_verify_bundle)
    audit = sub.add_parser("verify-audit", help="check the audit log against its signed checkpoints and witness")
    audit.add_argument("--lake", help="lake URI (default: CITYFACTORY_LAKE_URI)")
    audit.add_argument("--public-key", help="the audit public key, PEM (default: keys/audit-public.pem)")
    audit.add_argument("--from-witness", action="store_true", help="read only the entries after the witnessed checkpoint")
    audit.set_defaults(func=cmd_verify_audit)
    proof = sub.add_parser("audit-proof", help="inclusion proof of an entry, or consistency proof of an older size")
    proof.add_argument("--lake", help="lake URI (default: CITYFACTORY_LAKE_URI)")
    proof.add_argument("--public-key", help="the audit public key, PEM (default: keys/audit-public.pem)")
    which = proof.add_mutually_exclusive_group(required=True)
    which.add_argument("--entry", type=int, help="sequence number of the entry to prove included")
    which.add_argument("--since-size", type=int, help="an older tree size to prove the latest checkpoint extends")
    proof.set_defaults(func=cmd_audit_proof)
    fetch = sub.add_parser("fetch-data", help="locate or download the scenario's dataset")
    fetch.add_argument("scenario")
    fetch.set_defaults(func=cmd_fetch_data)
    validate = sub.add_parser("validate", help="check scenarios whole before any run")
    validate.add_argument("scenarios", nargs="*", help="scenario names (default: every file in dags/scenarios/)")
    validate.add_argument("--no-dbt", action="store_true", help="skip the dbt selection check (needs dbt)")
    validate.set_defaults(func=cmd_validate)
    scaffold = sub.add_parser("new-scenario", help="draft every file of a new scenario from sample data")
    scaffold.add_argument("name", help="the scenario's name: lower case, digits and _")
    scaffold.add_argument("--from", dest="sources", type=Path, nargs="+", required=True,
                          help="CSV files of one folder, or a folder of images in one subfolder per class")
    scaffold.add_argument("--target", help="the column to predict (default: the first numeric reading)")
    scaffold.add_argument("--timezone", help="the wall clock the files are written in (default: UTC)")
    scaffold.add_argument("--series", help="the column telling series apart (default: found in the data)")
    scaffold.add_argument("--domain", help="the department it belongs to (dags/domains.yaml; default: the first)")
    scaffold.set_defaults(func=cmd_new_scenario)
    token = sub.add_parser("edge-token", help="print a fleet's admin token (Authorization: Bearer ...)")
    token.add_argument("fleet", help="the fleet's name (dags/fleets/<fleet>.yaml)")
    token.set_defaults(func=cmd_edge_token)
    rotate = sub.add_parser("rotate-edge-token", help="give a fleet's nodes a new admin token (models keep serving)")
    rotate.add_argument("fleet", help="the fleet's name (dags/fleets/<fleet>.yaml)")
    rotate.set_defaults(func=cmd_rotate_edge_token)
    access = sub.add_parser("sync-access", help="write the departments' roles and logins into Airflow's FAB tables")
    access.add_argument("--passwords", type=Path, required=True, help="the logins' passwords file (generated if missing)")
    access.set_defaults(func=cmd_sync_access)
    mlflow_access = sub.add_parser("sync-mlflow-access", help="the same logins, each scenario's experiment and model "
                                   "granted to its department, on an MLflow server with basic auth")
    mlflow_access.add_argument("--passwords", type=Path, required=True, help="the logins' passwords file (generated if missing)")
    mlflow_access.set_defaults(func=cmd_sync_mlflow_access)
    args = parser.parse_args(argv)
    from cityfactory.ingestion.datasets import DatasetError
    from cityfactory.profiling.drafts import ScaffoldError

    try:
        return args.func(args)
    except (ScenarioError, DatasetError, ScaffoldError) as exc:  # a file to fix, named in the message: no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
