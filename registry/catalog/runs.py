"""Validation runs and the scores they record: one row per run, written in two transactions.

`start_run` inserts the run as `running` before any check starts, so a killed run still leaves a
trace; `finish_run` writes its outcome and its EvalScore rows in one transaction. Reads return
`RunRecord`s: typed checks, figures and gates (each gate with its expression, status and the
measured values it read), never ORM rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from registry.catalog.sql import Row, Tx, in_clause, json_out, time_out
from registry.errors import NotFound

if TYPE_CHECKING:
    from registry.catalog import Catalog


@dataclass(frozen=True)
class CheckRecord:
    """One stored check of a run. status: passed | warn | failed | error | skipped."""

    name: str
    status: str
    summary: str = ""
    seconds: float | None = None
    details: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class GateRecord:
    """One stored gate: its expression, its status, and the figures it read as measured."""

    expr: str
    status: str  # passed | failed | error (a figure was not measured, or division by zero)
    values: dict[str, float | None] = field(default_factory=dict)
    name: str | None = None
    message: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        return {"expr": self.expr, "name": self.name, "status": self.status,
                "values": self.values, "message": self.message}


@dataclass(frozen=True)
class RunRecord:
    """A stored validation run of one version."""

    id: int
    version_id: int
    ref: str  # NAME@N of the version
    status: str  # running | passed | failed | error
    device: str
    base_fingerprint: str | None
    started_at: datetime | None
    finished_at: datetime | None
    checks: tuple[CheckRecord, ...] = ()
    figures: dict[str, float | None] = field(default_factory=dict)
    gates: tuple[GateRecord, ...] = ()
    report: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    # the gates exactly as stored (a pulled run keeps the shape its manifest had)
    stored_gates: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    @property
    def measured(self) -> dict[str, float]:
        """The figures this run measured (unmeasured ones left out)."""
        return {k: v for k, v in self.figures.items() if v is not None}

    def check(self, name: str) -> CheckRecord | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """The `adapt runs --json` object: statuses of checks and gates, measured figures."""
        return {
            "run_id": self.id,
            "ref": self.ref,
            "status": self.status,
            "device": self.device,
            "base_fingerprint": self.base_fingerprint,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "checks": {c.name: c.status for c in self.checks},
            "figures": self.measured,
            "gates": [{"expr": g.expr, "status": g.status} for g in self.gates],
        }


@dataclass(frozen=True)
class RunScore:
    """A figure also kept as an EvalScore row (metric such as `validate.ppl`)."""

    metric: str
    value: float
    dataset: str | None = None


@dataclass(frozen=True)
class FinishedRun:
    """What `finish_run` writes: the run's outcome, its JSON columns and its scores."""

    status: str
    device: str
    base_fingerprint: str | None
    checks: dict[str, dict[str, Any]]  # name -> {status, summary, details, seconds}
    figures: dict[str, float | None]
    gates: list[dict[str, Any]]
    report: dict[str, Any]
    finished_at: datetime
    scores: tuple[RunScore, ...] = ()


_COLUMNS = ("r.id, r.version_id, a.name, v.version, r.status, r.device, r.base_fingerprint, "
            "r.started_at, r.finished_at, r.checks, r.figures, r.gates, r.report")
_FROM = ("FROM validation_run r JOIN adapter_version v ON v.id = r.version_id "
         "JOIN adapter a ON a.id = v.adapter_id")


def start_run(cat: Catalog, version_id: int) -> int:
    """Insert a `running` run of the version; its id."""
    with cat.tx(write=True) as tx:
        return tx.insert("INSERT INTO validation_run (version_id, device, status, started_at) "
                         "VALUES (:v, 'cpu', 'running', :t) RETURNING id",
                         v=version_id, t=tx.now())


def finish_run(cat: Catalog, run_id: int, outcome: FinishedRun) -> None:
    """Write a started run's outcome and its scores, in one transaction."""
    with cat.tx(write=True) as tx:
        version_id = tx.scalar("SELECT version_id FROM validation_run WHERE id = :id", id=run_id)
        if version_id is None:
            raise NotFound("validation run", str(run_id))
        tx.run("UPDATE validation_run SET status = :status, device = :device, "
               "base_fingerprint = :fp, checks = :checks, figures = :figures, gates = :gates, "
               "report = :report, finished_at = :finished WHERE id = :id",
               status=outcome.status, device=outcome.device, fp=outcome.base_fingerprint,
               checks=tx.json_in(outcome.checks), figures=tx.json_in(outcome.figures),
               gates=tx.json_in(outcome.gates), report=tx.json_in(outcome.report),
               finished=_time_in(tx, outcome.finished_at), id=run_id)
        now = tx.now()
        for score in outcome.scores:
            tx.run("INSERT INTO eval_score (version_id, metric, dataset, value, "
                   "base_fingerprint, run_id, created_at) VALUES (:v, :metric, :dataset, "
                   ":value, :fp, :run, :t)", v=version_id, metric=score.metric,
                   dataset=score.dataset, value=float(score.value),
                   fp=outcome.base_fingerprint, run=run_id, t=now)


def list_runs(cat: Catalog, version_id: int, limit: int | None = None) -> list[RunRecord]:
    """The runs of one version, newest first (at most `limit`; None or 0 for all)."""
    sql = f"SELECT {_COLUMNS} {_FROM} WHERE r.version_id = :v ORDER BY r.id DESC"
    params: dict[str, Any] = {"v": version_id}
    if limit:
        sql += " LIMIT :n"
        params["n"] = int(limit)
    with cat.tx() as tx:
        return [_record(r) for r in tx.all(sql, **params)]


def runs_by_id(cat: Catalog, ids: Iterable[int]) -> dict[int, RunRecord]:
    """Runs by id (ids that do not exist are left out)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    clause, params = in_clause("id", wanted)
    with cat.tx() as tx:
        rows = tx.all(f"SELECT {_COLUMNS} {_FROM} WHERE r.id IN {clause}", **params)
    return {rec.id: rec for rec in map(_record, rows)}


def _record(row: Row) -> RunRecord:
    checks, figures, gates = json_out(row[9]), json_out(row[10]), json_out(row[11])
    return RunRecord(
        id=row[0], version_id=row[1], ref=f"{row[2]}@{row[3]}", status=row[4], device=row[5],
        base_fingerprint=row[6], started_at=time_out(row[7]), finished_at=time_out(row[8]),
        checks=_checks(checks), figures=_figures(figures), gates=_gates(gates),
        report=json_out(row[12]), stored_gates=gates if isinstance(gates, list) else None,
    )


def _checks(stored: Any) -> tuple[CheckRecord, ...]:
    """Checks as adapt stores them (name -> result), or a list of results; a bool is a status."""
    if isinstance(stored, Mapping):
        items = list(stored.items())
    elif isinstance(stored, list):
        items = [(str(c.get("name", "?")) if isinstance(c, Mapping) else "?", c) for c in stored]
    else:
        return ()
    out = []
    for name, result in items:
        if isinstance(result, bool):
            out.append(CheckRecord(name, "passed" if result else "failed"))
        elif isinstance(result, Mapping):
            seconds = result.get("seconds")
            details = result.get("details")
            out.append(CheckRecord(
                name=str(result.get("name", name)), status=str(result.get("status") or "-"),
                summary=str(result.get("summary") or ""),
                seconds=float(seconds) if isinstance(seconds, int | float) else None,
                details=dict(details) if isinstance(details, Mapping) else {}))
        else:
            out.append(CheckRecord(name, "-", str(result)))
    return tuple(out)


def _figures(stored: Any) -> dict[str, float | None]:
    if not isinstance(stored, Mapping):
        return {}
    return {str(k): v if isinstance(v, int | float) or v is None else None
            for k, v in stored.items()}


def _gates(stored: Any) -> tuple[GateRecord, ...]:
    if not isinstance(stored, list):
        return ()
    out = []
    for g in stored:
        if not isinstance(g, Mapping):
            continue
        status = g.get("status")
        if status is None and "passed" in g:
            status = "passed" if g["passed"] else "failed"
        values = g.get("values")
        out.append(GateRecord(
            expr=str(g.get("expr", "?")), status=str(status or "error"),
            values=_figures(values) if isinstance(values, Mapping) else {},
            name=g.get("name"), message=g.get("message")))
    return tuple(out)


def _time_in(tx: Tx, value: datetime) -> Any:
    """A time as the backend stores it: naive UTC (SQLite as text, like SQLAlchemy writes it)."""
    naive = value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    return naive.isoformat(sep=" ", timespec="microseconds") if tx.dialect == "sqlite" else naive


__all__ = ["CheckRecord", "FinishedRun", "GateRecord", "RunRecord", "RunScore", "finish_run",
           "list_runs", "runs_by_id", "start_run"]
