"""Store verbs of the ``recsys`` command line: ``ingest``, ``store-info``, ``store-verify``, ``store-repair``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from features.incoming import DEFAULT_KEEP_DAYS
from features.ingest import ingest, retry_quarantine, store_info
from features.repair import repair_store, verify_store
from training.cli.common import HomeOption, JsonOption, emit, fail, home_of, stdout_console, user_errors

FileOption = Annotated[Path | None, typer.Option(help="CSV or Parquet file", dir_okay=False)]


def ingest_cmd(
    interactions: FileOption = None,
    users: FileOption = None,
    items: FileOption = None,
    requests: Annotated[Path | None, typer.Option(
        help="CSV or Parquet file of residents' requests (点单)", dir_okay=False)] = None,
    retry_quarantine_rows: Annotated[bool, typer.Option(
        "--retry-quarantine", help="Validate quarantined rows again and accept those that now pass")] = False,
    wait: Annotated[float, typer.Option(
        "--wait", min=0, help="Seconds to wait for another writer to finish")] = 0,
    keep_incoming_days: Annotated[float, typer.Option(
        "--keep-incoming-days", min=0,
        help="Delete a stopped server's API segment this many days after its last write, once it is "
             "wholly in the store")] = DEFAULT_KEEP_DAYS,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Validate provider files and the API's new events, and append them to the store.

    Bad rows go to store/quarantine with a reason; every table reports
    input rows = accepted + quarantined + duplicates. With --retry-quarantine the
    quarantined rows are validated again after this run, so interactions that waited
    for items given in the same command pass.
    """
    engine_home = home_of(home)
    with user_errors():
        summary: dict[str, Any] = ingest(
            engine_home, interactions=interactions, users=users, items=items, wait_seconds=wait,
            keep_incoming_days=keep_incoming_days, requests=requests,
        ).to_dict()
        if retry_quarantine_rows:
            retried = retry_quarantine(engine_home, wait_seconds=wait).to_dict()
            summary = {"ingest": summary, "retry": retried}
    emit(summary, as_json, _render_ingest)


def _render_ingest(summary: dict[str, Any]) -> None:
    runs = summary if "retry" in summary else {"ingest": summary}
    out = stdout_console()
    for label, run in runs.items():
        if run.get("removed_segments"):
            out.print(f"removed {len(run['removed_segments'])} fully ingested API segment(s) of stopped servers")
        if not run["tables"]:
            out.print(f"[bold]{label}[/bold]: nothing to do")
            continue
        table = Table(title=f"{label} {run['ingest_id']}" + ("" if run["committed"] else " (nothing written)"))
        for column in ("table", "input", "accepted", "quarantined", "duplicates"):
            table.add_column(column, justify="left" if column == "table" else "right")
        notes = []
        for name, counts in run["tables"].items():
            table.add_row(name, *(str(counts[k]) for k in ("input_rows", "accepted", "quarantined", "duplicates")))
            if counts["skipped_same_file"]:
                notes.append(f"{name}: skipped, this file was already ingested")
            elif counts["reasons"]:
                notes.append(f"{name} quarantined: " + ", ".join(f"{r} {n}" for r, n in counts["reasons"].items()))
            if counts.get("flagged"):
                notes.append(f"{name} flagged as likely poisoning (kept, left out of training and reports): "
                             + ", ".join(f"{source}: " + ", ".join(f"{r} {n}" for r, n in reasons.items())
                                         for source, reasons in counts["flagged_by_source"].items()))
            if counts.get("conflicting_ids"):
                notes.append(f"{name}: {counts['conflicting_ids']} id(s) given different values in this run, "
                             f"the last row wins: {', '.join(counts['conflict_examples'])}")
        out.print(table)
        for note in notes:
            out.print(note)
        out.print("input rows = accepted + quarantined + duplicates")
        if run["quarantine_file"]:
            out.print(f"quarantine file: {run['quarantine_file']}")


def store_info_cmd(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Show what the store holds: counts, date range, actions, kinds, quarantine."""
    with user_errors():
        info = store_info(home_of(home))
    emit(info, as_json, _render_info)


def _render_info(info: dict[str, Any]) -> None:
    out = stdout_console()
    out.print(f"[bold]store[/bold] {info['home']}")
    out.print(f"interactions {info['interactions']:,}  users {info['users']:,}  items {info['items']:,}")
    span = info["date_range"]
    out.print(f"time range {span['first'] or '-'} .. {span['last'] or '-'}")
    for title, counts in (("by action", info["interactions_by_action"]), ("items by kind", info["items_by_kind"]),
                          ("quarantine by reason", info["quarantine"]["by_reason"])):
        if counts:
            out.print(f"{title}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    flagged, left_out = info["flagged"], info["left_out"]
    out.print(f"flagged as likely poisoning {flagged['rows']:,}; left out of training and reports "
              f"{left_out['rows']:,}" + "".join(f", {reason} {n:,}" for reason, n in left_out["by_reason"].items()))
    for source, reasons in flagged["by_source"].items():
        out.print(f"  flagged from {source}: " + ", ".join(f"{reason} {n:,}" for reason, n in reasons.items()),
                  markup=False)
    out.print(f"quarantined rows {info['quarantine']['rows']:,}; ingests {info['ingests']}, "
              f"quarantine retries {info['quarantine_retries']}; "
              f"incoming bytes not yet ingested {info['incoming_pending_bytes']:,}")


def store_verify_cmd(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Check the store: the ingest log parses, every data file is committed and readable.

    Reads every partition and quarantine file and the items/users tables; names each
    corrupt, orphaned or missing file. Exit code 0 when healthy, 2 when not. Changes nothing.
    """
    with user_errors():
        report = verify_store(home_of(home))
    emit(report, as_json, _render_verify)
    if not report["healthy"]:
        raise fail(f"the store is not healthy ({len(report['problems'])} problem(s))")


def _render_verify(report: dict[str, Any]) -> None:
    out = stdout_console()
    rows = report["rows"]
    out.print(f"[bold]store[/bold] {report['home']}: {'healthy' if report['healthy'] else 'NOT healthy'}")
    out.print(f"log entries {report['log']['entries']}; files: {report['files']['interactions']} partitions, "
              f"{report['files']['quarantine']} quarantine, {report['files']['tables']} tables; rows: "
              + ", ".join(f"{name} {n:,}" for name, n in rows.items()))
    for problem in report["problems"]:
        out.print(f"- {problem}", markup=False)


def store_repair_cmd(
    wait: Annotated[float, typer.Option("--wait", min=0, help="Seconds to wait for another writer to finish")] = 0,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rebuild the ingest log from the data files (after it was lost, emptied or damaged).

    Every run with data files but no log line gets a line committing them (a data file is
    named after its run); readable log lines are kept, the old log is copied aside. Deletes
    no data file and loses no row; running it again changes nothing.
    """
    with user_errors():
        summary = repair_store(home_of(home), wait_seconds=wait)
    emit(summary, as_json, _render_repair)


def _render_repair(summary: dict[str, Any]) -> None:
    out = stdout_console()
    if not summary["changed"]:
        out.print(f"[bold]store[/bold] {summary['home']}: nothing to repair")
        return
    out.print(f"[bold]store[/bold] {summary['home']}: committed {len(summary['committed_runs'])} run(s) "
              f"({summary['rows']['interactions']:,} interactions, {summary['rows']['quarantine']:,} quarantined rows)")
    if summary["redundant_files"]:
        out.print(f"{len(summary['redundant_files'])} file(s) only repeat committed rows; "
                  "committed as retired, the next ingest removes them", markup=False)
    if summary["dropped_log_lines"]:
        out.print(f"dropped unreadable log line(s) {summary['dropped_log_lines']}", markup=False)
    if summary["backup"]:
        out.print(f"old log kept as {summary['backup']}", markup=False)


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the app."""
    app.command("ingest")(ingest_cmd)
    app.command("store-info")(store_info_cmd)
    app.command("store-verify")(store_verify_cmd)
    app.command("store-repair")(store_repair_cmd)
