"""What ``python -m mamlkit evaluate`` prints: one table per task family, metric and steps (each checkpoint
in its own units: accuracy in %, MSE as it is), or strict JSON (a mean over diverged tasks is ``null``).
"""

from __future__ import annotations

import json
import math

from .evaluation import EvalResult, paired_difference


def as_json(rows: list[dict]) -> str:
    return json.dumps([_json_row(r) for r in rows], indent=2, allow_nan=False)


def tables(rows: list[dict], n_tasks: int) -> str:
    """The rows of ``training.evaluate_checkpoint`` (with ``steps`` to show) as Markdown tables."""
    lines, groups = [], {}
    for r in rows:
        groups.setdefault((r["task"], r["metric"], tuple(r["steps"])), []).append(r)
    for n, ((_, metric, steps), group) in enumerate(groups.items()):
        if n:
            lines.append("")
        for r in group:
            p = r["protocol"]
            ways = f"{r['ways']}-way " if r["ways"] else ""
            tuning = {"protonet": "no fine-tuning (nearest prototype)",
                      "imaml": f"proximal {p['inner_optimizer']} lr {p['inner_lr']}"}.get(
                r["algo"], f"{p['inner_optimizer']} lr {p['inner_lr']}")
            lines.append(f"{r['checkpoint']} ({r['task']}, {r['algo']}): {r['metric']} on {n_tasks} fixed test tasks, "
                         f"{ways}{p['shots']}-shot, {tuning}"
                         f"{'' if p['transductive'] else ', each query on its own'} (mean ± 95% CI)")
        scale = 100 if metric == "accuracy" else 1
        lines.append("accuracy in %:" if metric == "accuracy" else f"{metric.upper()}:")
        lines.append("| checkpoint | algo | " + " | ".join(f"{s} step{'s' * (s != 1)}" for s in steps) + " |")
        lines.append("|---|---|" + "---|" * len(steps))
        for r in group:
            lines.append(f"| {r['checkpoint']} | {r['algo']} | {' | '.join(_cell(r, s, scale) for s in steps)} |")
    if n_tasks == 1:
        lines.append("note: one test task gives no confidence interval (± n/a); use --tasks 2 or more")
    return "\n".join(lines + _paired_lines(rows))


def add_paired(rows: list[dict]) -> None:
    """``--paired``: each row after the first gets ``paired`` = {step: (mean, ci95)} of its per-task difference to
    the first row (``evaluation.paired_difference``), where both scored the same test tasks; else a ``paired_note``."""
    first = rows[0]
    same = ("task", "metric", "ways", "tasks")
    for r in rows[1:]:
        if any(r[k] != first[k] for k in same) or r["protocol"]["shots"] != first["protocol"]["shots"]:
            r["paired_note"] = (f"not paired with {first['checkpoint']}: different test tasks (task, ways, shots or "
                                "number of tasks differ)")
            continue
        steps = [s for s in r["steps"] if s in r["scored"] and s in first["scored"]]
        a, b = r["result"], first["result"]
        r["paired"] = {s: paired_difference(_at(a, s), _at(b, s), 0) for s in steps}


def _at(result, step: int):
    """The result after ``step`` only (two methods may score different step lists)."""
    i = list(result.steps).index(step)
    return EvalResult([0], result.per_task[:, i:i + 1], result.metric)


def _paired_lines(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows[1:]:
        if "paired_note" in r:
            lines.append(r["paired_note"])
        elif "paired" in r:
            scale = 100 if r["metric"] == "accuracy" else 1
            cells = ", ".join(f"{s} step{'s' * (s != 1)}: {scale * m:+.3f} ± {scale * c:.3f}"
                              for s, (m, c) in r["paired"].items())
            lines.append(f"{r['checkpoint']} − {rows[0]['checkpoint']}, paired on the same tasks"
                         f"{' (points)' if scale == 100 else ''}: {cells}")
    return lines


def _finite(x):
    return x if isinstance(x, float) and math.isfinite(x) else None


def _json_row(r: dict) -> dict:
    """A row as strict JSON: a mean over tasks of which some diverged (non-finite) is ``null``, with the
    number of diverged tasks and the median beside it; a CI of one task is ``null``."""
    steps = {}
    for s in r["steps"]:
        i = r["scored"].index(s)
        cell = {k: _finite(r[k][i]) for k in ("mean", "ci95", "median")}
        cell["diverged"] = r["diverged"][i]
        steps[s] = cell
    row = {**{k: r[k] for k in ("checkpoint", "task", "algo", "metric", "ways", "protocol", "tasks")}, "steps": steps}
    row["protocol"] = {k: (_finite(v) if isinstance(v, float) else v) for k, v in r["protocol"].items()}
    row["diverged"] = max(r["diverged"]) if r["diverged"] else 0
    notes = []
    if row["diverged"]:
        notes.append(f"up to {row['diverged']} of {r['tasks']} tasks diverged (non-finite): their mean is null; "
                     "see median")
    if r["tasks"] == 1:
        notes.append("one test task: no confidence interval (ci95 is null)")
    if notes:
        row["note"] = "; ".join(notes)
    if "paired" in r:  # --paired: this row minus the first, per task on the same tasks
        row["paired_to_first"] = {s: {"mean": _finite(m), "ci95": _finite(c)} for s, (m, c) in r["paired"].items()}
    if "paired_note" in r:
        row["paired_note"] = r["paired_note"]
    return row


def _cell(r: dict, step: int, scale: float) -> str:
    """mean ± 95% CI; where some tasks diverged (non-finite), say how many and give the median."""
    if step not in r["scored"]:
        return "—"
    i = r["scored"].index(step)
    ci = r["ci95"][i]
    text = f"{scale * r['mean'][i]:.3f} ± {'n/a' if ci != ci else f'{scale * ci:.3f}'}"
    if r["diverged"][i]:
        text = f"{text} ({r['diverged'][i]}/{r['tasks']} tasks diverged; median {scale * r['median'][i]:.3f})"
    return text
