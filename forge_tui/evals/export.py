"""A run as promptfoo's results file (``promptfoo eval -o results.json``, version 3) or as Markdown.

The JSON is promptfoo's ``OutputFile``: ``evalId``, ``results`` (``version: 3``, ``timestamp``,
``prompts`` with per-prompt ``metrics``, ``results`` with one entry per case, ``stats``),
``config`` (the suite as written), ``shareableUrl`` and ``metadata``. ``promptfoo import
results.json`` then ``promptfoo view`` shows the run. Each provider is a target (``forge:<route>``,
``forge:<route>@<host>``), so compare runs appear as promptfoo's side-by-side columns; forge's own
facts (served model, host, backend, startup waits, 429 retries) ride in each result's ``metadata``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from .runner import CaseResult, RunResult
from .summary import compare_table, summarize

__all__ = ["to_markdown", "to_promptfoo"]

# promptfoo's ResultFailureReason
_NONE, _ASSERT, _ERROR = 0, 1, 2


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


def _prompt_id(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def _provider_id(target: str) -> str:
    return f"forge:{target}"


def _tokens(c: CaseResult) -> dict[str, int]:
    p, o = c.tokens_in or 0, c.tokens_out or 0
    return {"total": p + o, "prompt": p, "completion": o, "cached": 0, "numRequests": 1}


def _result(run: RunResult, c: CaseResult, col: int) -> dict[str, Any]:
    prompt = run.prompts[c.prompt_idx] if c.prompt_idx < len(run.prompts) else None
    raw = prompt.raw if prompt else c.prompt
    failure = _ERROR if c.error is not None else (_NONE if c.success else _ASSERT)
    out: dict[str, Any] = {
        "id": f"{run.id}-{c.index}",
        "promptIdx": col,
        "testIdx": c.test_idx,
        "testCase": {"description": c.description, "vars": c.vars},
        "promptId": _prompt_id(raw),
        "provider": {"id": _provider_id(c.target), "label": c.target},
        "prompt": {"raw": c.prompt, "label": prompt.label if prompt else c.prompt[:60]},
        "vars": c.vars,
        "response": {"output": c.output, "tokenUsage": _tokens(c), "latencyMs": round(c.latency_ms), "cached": False},
        "success": c.success,
        "score": c.score,
        "latencyMs": round(c.latency_ms),
        "namedScores": {o.metric: o.score for o in c.assertions if o.metric},
        "failureReason": failure,
        "cost": 0,
        "tokenUsage": _tokens(c),
        "metadata": {
            "forge": {
                "served_model": c.served_model,
                "served_host": c.served_host,
                "served_backend": c.served_backend,
                "status": c.status,
                "startup_waits": c.startup_waits,
                "saturation_retries": c.saturation_retries,
                "waited_s": round(c.waited_s, 3),
                "request_id": c.request_id,
                "repeat": c.repeat_idx,
            }
        },
    }
    if c.error is not None:
        out["error"] = c.error
        out["response"]["error"] = c.error
    else:
        out["gradingResult"] = {
            "pass": c.success,
            "score": c.score,
            "reason": c.reason,
            "namedScores": out["namedScores"],
            "componentResults": [
                {
                    "pass": o.passed,
                    "score": o.score,
                    "reason": o.reason or ("Assertion passed" if o.passed else "Assertion failed"),
                    "assertion": {
                        "type": o.type,
                        **({"value": o.value} if o.value is not None else {}),
                        "weight": o.weight,
                        **({"metric": o.metric} if o.metric else {}),
                    },
                }
                for o in c.assertions
            ],
        }
    return out


def to_promptfoo(run: RunResult) -> dict[str, Any]:
    # promptfoo's columns are (prompt, provider) pairs: one CompletedPrompt per pair, in first-seen order.
    columns: dict[tuple[int, str], int] = {}
    for c in run.cases:
        columns.setdefault((c.prompt_idx, c.target), len(columns))
    results = [_result(run, c, columns[(c.prompt_idx, c.target)]) for c in run.cases]
    prompts = []
    for pi, target in sorted(columns, key=columns.__getitem__):
        cs = [c for c in run.cases if c.prompt_idx == pi and c.target == target]
        p = run.prompts[pi] if pi < len(run.prompts) else None
        raw = p.raw if p else ""
        tok = [_tokens(c) for c in cs]
        prompts.append(
            {
                "raw": raw,
                "label": p.label if p else raw[:60],
                "id": _prompt_id(raw),
                "provider": _provider_id(target),
                "metrics": {
                    "score": sum(c.score for c in cs),
                    "testPassCount": sum(1 for c in cs if c.success),
                    "testFailCount": sum(1 for c in cs if not c.success and c.error is None),
                    "testErrorCount": sum(1 for c in cs if c.error is not None),
                    "assertPassCount": sum(1 for c in cs for o in c.assertions if o.passed),
                    "assertFailCount": sum(1 for c in cs for o in c.assertions if not o.passed),
                    "totalLatencyMs": round(sum(c.latency_ms for c in cs)),
                    "tokenUsage": {k: sum(t[k] for t in tok) for k in ("total", "prompt", "completion", "cached")},
                    "namedScores": {},
                    "namedScoresCount": {},
                    "cost": 0,
                },
            }
        )
    tok_all = [_tokens(c) for c in run.cases]
    return {
        "evalId": run.id,
        "results": {
            "version": 3,
            "timestamp": _iso(run.started_at),
            "prompts": prompts,
            "results": results,
            "stats": {
                "successes": sum(1 for c in run.cases if c.success),
                "failures": sum(1 for c in run.cases if not c.success and c.error is None),
                "errors": sum(1 for c in run.cases if c.error is not None),
                "tokenUsage": {
                    k: sum(t[k] for t in tok_all) for k in ("total", "prompt", "completion", "cached", "numRequests")
                },
                "durationMs": round((run.finished_at - run.started_at) * 1000),
            },
        },
        "config": json.loads(json.dumps(run.config, default=str)),
        "shareableUrl": None,
        "metadata": {
            "exportedAt": _iso(run.finished_at or run.started_at),
            "evaluationCreatedAt": _iso(run.started_at),
            "author": "forge-tui",
        },
    }


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _table(rows: list[list[str]]) -> list[str]:
    head, *body = rows
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(_cell(x) for x in r) + " |" for r in body]
    return out


def to_markdown(run: RunResult) -> str:
    lines = [
        f"# Eval {run.id}: {run.suite}",
        "",
        f"- gateway: {run.url}",
        f"- started: {_iso(run.started_at)}, took {run.finished_at - run.started_at:.1f} s",
        f"- concurrency {run.concurrency}, repeat {run.repeat}",
        "",
        "## Summary",
        "",
        *_table(compare_table(summarize(run.cases))),
        "",
        "## Cases",
        "",
    ]
    rows = [["target", "test", "result", "latency", "served by", "output / reason"]]
    for c in run.cases:
        mark = "ERROR" if c.error is not None else ("PASS" if c.success else "FAIL")
        said = c.output if len(c.output) <= 80 else c.output[:79] + "…"
        why = "" if c.success else f" ({c.reason[:120]})"
        served = f"{c.served_model}@{c.served_host}" if c.served_model else "-"
        rows.append([c.target, c.description, mark, f"{c.latency_ms:.0f} ms", served, f"{said!r}{why}"])
    lines += _table(rows)
    return "\n".join(lines) + "\n"
