"""`rtml experiments list | compare RUN RUN`: the MLflow training runs from the command line."""

from __future__ import annotations

import argparse

COLUMNS = [  # (header, where, key)
    ("start", "start", ""),
    ("status", "status", ""),
    ("trigger", "tags", "rtml.trigger"),
    ("model", "tags", "rtml.model_tag"),
    ("gate", "tags", "rtml.gate"),
    ("pr_auc", "metrics", "holdout.pr_auc"),
    ("rows", "metrics", "training_set.rows"),
    ("set", "tags", "rtml.training_set_hash"),
    ("code", "tags", "rtml.code_commit"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="training runs, newest first")
    ls.add_argument("-n", type=int, default=20, help="how many (default 20)")
    cmp = sub.add_parser("compare", help="two runs side by side: params, metrics, lineage, gate")
    cmp.add_argument("runs", nargs=2, metavar="RUN", help="run id or unique prefix")
    cmp.add_argument("--all", action="store_true", help="also rows that are equal")


def _cell(run, where: str, key: str) -> str:
    from datetime import UTC, datetime

    if where == "start":
        return datetime.fromtimestamp(run.info.start_time / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    if where == "status":
        return run.info.status
    value = getattr(run.data, where).get(key)
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.0f}"
    return str(value)[:16] if key == "rtml.training_set_hash" else str(value)


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def compare_rows(a, b, include_equal: bool = False) -> list[list[str]]:
    """``[section, key, value a, value b]`` for params, metrics and tags of two runs (equal rows dropped)."""
    rows = []
    for section in ("params", "metrics", "tags"):
        da, db = getattr(a.data, section), getattr(b.data, section)
        for key in sorted(set(da) | set(db)):
            if section == "tags" and (key.startswith("mlflow.") and key != "mlflow.runName"):
                continue
            va, vb = _fmt(da.get(key)), _fmt(db.get(key))
            if include_equal or va != vb:
                rows.append([section, key, va, vb])
    return rows


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def run(args: argparse.Namespace) -> int:
    from core.settings import settings
    from training import tracking

    client = tracking.client()
    where = f"experiment {settings().mlflow.experiment!r} in {settings().mlflow_tracking_uri}"
    if args.action == "list":
        runs = tracking.top_level_runs(client)[: args.n]
        if not runs:
            print(f"no training runs in {where}; run `rtml train`")
            return 0
        rows = [["run", *[h for h, _, _ in COLUMNS]]]
        rows += [[r.info.run_id, *[_cell(r, w, k) for _, w, k in COLUMNS]] for r in runs]
        print(table(rows))
        return 0
    a, b = (tracking.find_run(client, ref) for ref in args.runs)
    rows = [["", "", a.info.run_id, b.info.run_id]]
    rows += [["", "run", a.info.run_name or "-", b.info.run_name or "-"], ["", "status", a.info.status, b.info.status]]
    diff = compare_rows(a, b, include_equal=args.all)
    rows += diff
    print(table(rows))
    if not diff:
        print("(params, metrics and tags are all equal; --all shows them)")
    return 0
