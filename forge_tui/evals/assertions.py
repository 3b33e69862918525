"""Score one output against one assertion, the way promptfoo does for the types this harness supports.

Each assertion yields a score in [0, 1] and a pass; ``not-<type>`` inverts both. ``threshold``:
milliseconds for ``latency``; the score a ``python`` result must reach; the fraction of the
listed strings ``contains-any`` / ``contains-all`` must find (default: any one / every one).
A test's score is the weighted mean of its assertions' scores; it passes when every assertion
with a weight above zero passes, or, when the test sets ``threshold``, when its score reaches it.
``python`` runs in this process: it is for the operator's own suite files, like a conftest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from .suite import Assertion

__all__ = ["AssertContext", "Outcome", "TestScore", "evaluate", "score_test"]


@dataclass(frozen=True, slots=True)
class AssertContext:
    vars: dict[str, Any]
    prompt: str
    latency_ms: float
    status: int
    route: str
    host: str | None
    base_dir: str
    test: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outcome:
    type: str
    value: Any
    passed: bool
    score: float
    reason: str
    weight: float
    metric: str | None


@dataclass(frozen=True, slots=True)
class TestScore:
    passed: bool
    score: float
    reason: str


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _json_values(output: str) -> list[Any]:
    """Every JSON object or array embedded in ``output`` (first one first), as promptfoo's contains-json finds them."""
    dec = json.JSONDecoder()
    found: list[Any] = []
    i = 0
    while i < len(output) and len(found) < 32:
        j = min((k for k in (output.find("{", i), output.find("[", i)) if k >= 0), default=-1)
        if j < 0:
            break
        try:
            val, end = dec.raw_decode(output, j)
        except ValueError:
            i = j + 1
            continue
        found.append(val)
        i = end
    return found


def _schema_error(value: Any, schema: Any) -> str | None:
    if schema is None:
        return None
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        return f"{exc.message}" + (f" at /{where}" if where else "")
    except jsonschema.SchemaError as exc:
        return f"the assertion's schema is invalid: {exc.message}"
    return None


def _fraction(output: str, items: Sequence[Any], *, fold: bool) -> tuple[float, list[str]]:
    hay = output.lower() if fold else output
    missing = [str(x) for x in items if (str(x).lower() if fold else str(x)) not in hay]
    return (1.0 - len(missing) / len(items)) if items else 1.0, missing


def _python(a: Assertion, output: str, ctx: AssertContext) -> tuple[bool, float, str]:
    src = str(a.value)
    context = {
        "vars": ctx.vars,
        "prompt": ctx.prompt,
        "test": ctx.test,
        "latency_ms": ctx.latency_ms,
        "status": ctx.status,
        "route": ctx.route,
        "host": ctx.host,
    }
    if src.startswith("file://"):
        ref = src.removeprefix("file://")
        fname, _, func = ref.partition(":")
        path = Path(fname) if Path(fname).is_absolute() else Path(ctx.base_dir) / fname
        ns: dict[str, Any] = {"__file__": str(path), "__name__": "forge_eval_assert"}
        code = compile(path.read_text(encoding="utf-8"), str(path), "exec")
        exec(code, ns)  # the operator's own suite file, by design (see the module docstring)
        fn = ns.get(func or "get_assert")
        if not callable(fn):
            raise ValueError(f"{path} defines no function {func or 'get_assert'}(output, context)")
        result = fn(output, context)
    elif "\n" in src.strip():
        # A multi-line value is a function body that returns the result (promptfoo's convention).
        body = "def __forge_assert(output, context):\n" + "\n".join("    " + ln for ln in src.splitlines())
        ns = {}
        exec(compile(body, "<python assertion>", "exec"), ns)
        result = ns["__forge_assert"](output, context)
    else:
        # one namespace, so comprehensions inside the expression see output and context too
        result = eval(compile(src, "<python assertion>", "eval"), {"output": output, "context": context})
    threshold = a.threshold
    if isinstance(result, bool):
        return result, 1.0 if result else 0.0, "" if result else f"python returned False: {src[:80]}"
    if isinstance(result, (int, float)):
        score = float(result)
        ok = score >= threshold if threshold is not None else score > 0
        return ok, max(0.0, min(1.0, score)), "" if ok else f"python score {score:g} below {threshold or 0:g}"
    if isinstance(result, dict) and "pass" in result:
        ok = bool(result["pass"])
        score = float(result.get("score", 1.0 if ok else 0.0))
        if threshold is not None:
            ok = ok and score >= threshold
        return ok, score, str(result.get("reason", ""))
    raise ValueError(f"python assertion returned {type(result).__name__}; expected bool, number or a grading dict")


def _base(a: Assertion, kind: str, output: str, ctx: AssertContext) -> tuple[bool, float, str]:
    v = a.value
    if kind == "equals":
        if isinstance(v, (dict, list)):
            try:
                ok = json.loads(output) == v
            except ValueError:
                ok = False
        else:
            ok = output == str(v)
        return ok, float(ok), "" if ok else f"expected exactly {_text(v)[:80]!r}"
    if kind == "contains":
        ok = str(v) in output
        return ok, float(ok), "" if ok else f"does not contain {str(v)!r}"
    if kind == "icontains":
        ok = str(v).lower() in output.lower()
        return ok, float(ok), "" if ok else f"does not contain {str(v)!r} (any case)"
    if kind == "starts-with":
        ok = output.startswith(str(v))
        return ok, float(ok), "" if ok else f"does not start with {str(v)!r}"
    if kind == "regex":
        ok = re.search(str(v), output) is not None
        return ok, float(ok), "" if ok else f"no match for /{v}/"
    if kind in ("contains-any", "contains-all"):
        items = list(v or [])
        frac, missing = _fraction(output, items, fold=False)
        if kind == "contains-any":
            if a.threshold is None:
                ok = frac > 0
                return ok, float(ok), "" if ok else f"contains none of {items}"
            ok = frac >= a.threshold
            return ok, frac, "" if ok else f"found {frac:.0%} of {items}, needs {a.threshold:.0%}"
        need = a.threshold if a.threshold is not None else 1.0
        ok = frac >= need
        return ok, frac, "" if ok else f"missing {missing}"
    if kind == "is-json":
        try:
            val = json.loads(output)
        except ValueError as exc:
            return False, 0.0, f"not JSON: {exc}"
        err = _schema_error(val, v)
        return err is None, float(err is None), "" if err is None else f"JSON does not match the schema: {err}"
    if kind == "contains-json":
        vals = _json_values(output)
        if not vals:
            return False, 0.0, "no JSON object or array in the output"
        errors = [_schema_error(x, v) for x in vals]
        if any(e is None for e in errors):
            return True, 1.0, ""
        return False, 0.0, f"JSON found but it does not match the schema: {errors[0]}"
    if kind == "latency":
        ok = ctx.latency_ms <= float(a.threshold or 0)
        return ok, float(ok), "" if ok else f"took {ctx.latency_ms:.0f} ms, over {a.threshold:g} ms"
    if kind == "python":
        return _python(a, output, ctx)
    raise ValueError(f"unknown assertion type {kind!r}")  # suite validation stops these first


def evaluate(a: Assertion, output: str, ctx: AssertContext) -> Outcome:
    inverse = a.type.startswith("not-")
    kind = a.type.removeprefix("not-")
    try:
        ok, score, reason = _base(a, kind, output, ctx)
    except Exception as exc:  # a broken python assertion fails that assertion, it does not stop the run
        ok, score, reason = False, 0.0, f"{kind} assertion raised {exc.__class__.__name__}: {exc}"
        inverse = False
    if inverse:
        ok, score = not ok, 1.0 - score
        reason = "" if ok else f"{a.type}: the output matched {_text(a.value)[:80]!r}"
    return Outcome(a.type, a.value, ok, score, reason, a.weight, a.metric)


def score_test(outcomes: Sequence[Outcome], threshold: float | None) -> TestScore:
    weighted = [o for o in outcomes if o.weight > 0]
    total = sum(o.weight for o in weighted)
    score = sum(o.score * o.weight for o in weighted) / total if total else 1.0
    failed = [o for o in weighted if not o.passed]
    if threshold is not None:
        ok = score >= threshold
        reason = "" if ok else f"score {score:.2f} below the test threshold {threshold:g}"
    else:
        ok = not failed
        reason = "; ".join(f"{o.type}: {o.reason}" for o in failed)
    return TestScore(ok, score, reason or ("All assertions passed" if ok else "failed"))
