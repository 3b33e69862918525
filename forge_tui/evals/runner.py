"""Run a suite through the gateway's real HTTP port, one case at a time unless told otherwise.

Why sequential by default: during a backend's startup window, parallel image requests fail
together and the errors point at whichever backend was busy, not at the one that was loading
("sequential runs told the truth"). So before each case the runner asks the gateway for the
state of the backend the route lands on (``GET /health``; the backend of a route is learned
from ``x-forge-route``, or from the admin snapshot when a token is given) and waits while it is
starting. A startup answer anyway (``upstream_startup``, or a 502/503 while ``/health`` says the
backend is starting) is waited out and retried; a 429 is retried with backoff. Both are counted
per case. Nothing else is retried: a wrong answer is a result, a 500 is an error.

Every request carries ``x-forge-source: bench`` so eval traffic stays out of the live trial
comparison. A host target sends ``x-forge-placement`` with the admin token.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import inspect
import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from .assertions import AssertContext, Outcome, evaluate, score_test
from .suite import EvalTest, Prompt, Suite, SuiteError, load_var, render_messages

__all__ = ["CaseResult", "EvalRunner", "RunResult", "Target", "new_run_id", "parse_route_header"]

SOURCE = "bench"
# Request fields a provider config or a test's options may set on the body (the rest is promptfoo's own).
BODY_KEYS = frozenset(
    {
        "temperature",
        "max_tokens",
        "seed",
        "top_p",
        "top_k",
        "min_p",
        "stop",
        "response_format",
        "chat_template_kwargs",
        "presence_penalty",
        "frequency_penalty",
        "repeat_penalty",
        "n_predict",
    }
)
_STARTUP_CODES = frozenset({"upstream_startup"})
_B64_RUN = re.compile(r"[A-Za-z0-9+/=]{256,}")


@dataclass(frozen=True, slots=True)
class Target:
    """Where a suite runs: a route (role or model id), optionally pinned to one host or backend."""

    route: str
    host: str | None = None
    config: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def label(self) -> str:
        return f"{self.route}@{self.host}" if self.host else self.route


@dataclass(slots=True)
class CaseResult:
    index: int
    target: str
    route: str
    host: str | None  # the pinned host, if any
    test_idx: int
    prompt_idx: int
    repeat_idx: int
    description: str
    vars: dict[str, Any]
    prompt: str  # what was sent, base64 blobs shortened
    output: str = ""
    status: int = 0
    error: str | None = None  # set when the case has no scorable answer
    served_model: str | None = None
    served_host: str | None = None
    served_backend: str | None = None
    latency_ms: float = 0.0
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_per_s: float | None = None
    success: bool = False
    score: float = 0.0
    reason: str = ""
    assertions: list[Outcome] = field(default_factory=list)
    startup_waits: int = 0  # times the case waited for a starting backend (before or after an answer)
    saturation_retries: int = 0
    waited_s: float = 0.0
    request_id: str | None = None
    time: float = 0.0


@dataclass(slots=True)
class RunResult:
    id: str
    suite: str
    suite_path: str | None
    url: str
    targets: list[str]
    concurrency: int
    repeat: int
    started_at: float
    finished_at: float = 0.0
    cases: list[CaseResult] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    prompts: list[Prompt] = field(default_factory=list)


def new_run_id(now: float | None = None) -> str:
    t = dt.datetime.fromtimestamp(now or time.time(), dt.UTC)
    return f"eval-{t:%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


def parse_route_header(value: str | None) -> dict[str, str]:
    """``role=x; model=m; host=h; backend=b`` -> a dict (missing keys absent)."""
    out: dict[str, str] = {}
    for part in (value or "").split(";"):
        k, sep, v = part.strip().partition("=")
        if sep and v and v != "-":
            out[k] = v
    return out


def _shorten(text: str) -> str:
    return _B64_RUN.sub(lambda m: f"<base64, {len(m.group(0))} chars>", text)


def _prompt_text(messages: list[dict[str, Any]]) -> str:
    parts: list[str] = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            parts += [p["text"] for p in c if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return "\n".join(parts)


def _error_of(resp: httpx.Response) -> tuple[str, str | None]:
    try:
        body = resp.json()
    except ValueError:
        return (resp.text[:300] or resp.reason_phrase), None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or resp.reason_phrase), err.get("code") if isinstance(
            err.get("code"), str
        ) else None
    if isinstance(err, str):
        return err, None
    return resp.text[:300], None


def _answer(resp: httpx.Response) -> tuple[str, dict[str, Any]]:
    """The text the model said and the body (chat choices, or an audio route's ``text``)."""
    body = resp.json()
    if not isinstance(body, dict):
        raise ValueError("the answer is not a JSON object")
    if isinstance(body.get("text"), str):
        return body["text"], body
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        msg = choices[0].get("message")
        if isinstance(msg, dict):
            c = msg.get("content")
            return (c if isinstance(c, str) else ""), body
        if isinstance(choices[0].get("text"), str):
            return choices[0]["text"], body
    raise ValueError("the answer has neither choices[0].message nor text")


class EvalRunner:
    def __init__(
        self,
        base_url: str,
        suite: Suite,
        targets: Sequence[Target],
        *,
        concurrency: int = 1,
        repeat: int | None = None,
        timeout_s: float | None = None,
        admin_token: str | None = None,
        api_key: str | None = None,
        startup_wait_s: float = 300.0,
        max_startup_waits: int = 5,
        max_saturation_retries: int = 6,
        backoff_s: float = 0.5,
        on_case: Callable[[CaseResult, int, int], Any] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not targets:
            raise SuiteError("nothing to run on: give --route (or providers in the suite)")
        if any(t.host for t in targets) and not admin_token:
            raise SuiteError("--host pins requests to a placement, which the gateway allows only with the admin token")
        self.url = base_url.rstrip("/")
        self.suite = suite
        self.targets = list(targets)
        self.concurrency = max(1, concurrency)
        self.repeat = max(1, repeat if repeat is not None else suite.repeat)
        default_timeout = suite.timeout_ms / 1000 if suite.timeout_ms else 120.0
        self.timeout_s = timeout_s or default_timeout
        self.admin_token = admin_token
        self.api_key = api_key
        self.startup_wait_s = startup_wait_s
        self.max_startup_waits = max_startup_waits
        self.max_saturation_retries = max_saturation_retries
        self.backoff_s = backoff_s
        self.on_case = on_case
        self._client = client
        self._learned: dict[Target, set[str]] = {}  # target -> backends its answers came from
        self._snapshot: dict[str, Any] | None = None

    # ------------------------------------------------------------------ plan
    def plan(self) -> list[tuple[Target, int, int, int]]:
        """(target, repeat, test, prompt) in run order: targets one after another (a fair comparison)."""
        out = []
        for t in self.targets:
            for r in range(self.repeat):
                for ti in range(len(self.suite.tests)):
                    for pi in range(len(self.suite.prompts)):
                        out.append((t, r, ti, pi))
        return out

    async def run(self, run_id: str | None = None) -> RunResult:
        started = time.time()
        result = RunResult(
            id=run_id or new_run_id(started),
            suite=self.suite.label(),
            suite_path=self.suite.path,
            url=self.url,
            targets=[t.label for t in self.targets],
            concurrency=self.concurrency,
            repeat=self.repeat,
            started_at=started,
            config=self.suite.raw,
            prompts=list(self.suite.prompts),
        )
        headers = {"x-forge-source": SOURCE}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        own = self._client is None
        client = self._client or httpx.AsyncClient(base_url=self.url, headers=headers, timeout=self.timeout_s)
        try:
            if self.admin_token:
                self._snapshot = await self._admin_snapshot(client)
            plan = self.plan()
            sem = asyncio.Semaphore(self.concurrency)
            done = 0

            async def one(i: int, item: tuple[Target, int, int, int]) -> CaseResult:
                nonlocal done
                async with sem:
                    case = await self._case(client, i, *item)
                done += 1
                if self.on_case is not None:
                    pending = self.on_case(case, done, len(plan))
                    if inspect.isawaitable(pending):  # an async callback (the console's) is awaited in order
                        await pending
                return case

            for target in self.targets:
                items = [(i, it) for i, it in enumerate(plan) if it[0] == target]
                if self.concurrency == 1:
                    for i, it in items:
                        result.cases.append(await one(i, it))
                else:
                    result.cases += await asyncio.gather(*(one(i, it) for i, it in items))
        finally:
            if own:
                await client.aclose()
        result.finished_at = time.time()
        return result

    # ------------------------------------------------------------------ gateway state
    async def _admin_snapshot(self, client: httpx.AsyncClient) -> dict[str, Any] | None:
        try:
            r = await client.get("/admin/snapshot", headers={"x-forge-admin-token": self.admin_token or ""})
            data = r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _backends_for(self, target: Target) -> set[str]:
        """The backends a target's next case may land on: learned from answers, else from the snapshot."""
        learned = self._learned.get(target)
        if learned:
            return learned
        snap = self._snapshot
        if snap is None:
            return set()
        model = target.route
        for r in snap.get("roles") or []:
            if isinstance(r, dict) and r.get("name") == target.route:
                model = r.get("model") or model
        hosts: set[str] = set()
        for m in snap.get("models") or []:
            if isinstance(m, dict) and m.get("id") == model:
                hosts = set(m.get("hosts") or [])
        out = set()
        backends = [b for h in snap.get("hosts") or [] if isinstance(h, dict) for b in h.get("backends") or []]
        for b in backends:
            if not isinstance(b, dict):
                continue
            on = b.get("host") == target.host or b.get("name") == target.host if target.host else b.get("host") in hosts
            if on:
                out.add(str(b.get("name")))
        return out

    async def _health(self, client: httpx.AsyncClient) -> dict[str, str]:
        try:
            r = await client.get("/health", timeout=10)
            data = r.json()
        except (httpx.HTTPError, ValueError):
            return {}
        b = data.get("backends") if isinstance(data, dict) else None
        return {str(k): str(v) for k, v in b.items()} if isinstance(b, dict) else {}

    async def _wait(self, client: httpx.AsyncClient, backends: set[str], *, until_ready: bool) -> tuple[bool, float]:
        """Poll /health while any of ``backends`` is starting (or, with until_ready, not ready); bounded.

        Returns (waited at all, seconds waited)."""
        if not backends:
            return False, 0.0
        t0 = time.monotonic()
        delay = 0.1
        waited = False
        while True:
            health = await self._health(client)
            states = [health.get(b) for b in backends if b in health]
            if not states:  # /health unreachable or silent about these backends: nothing to wait on
                return waited, time.monotonic() - t0
            busy = any(s == "starting" for s in states) or (until_ready and not any(s == "ready" for s in states))
            if not busy or time.monotonic() - t0 + delay > self.startup_wait_s:
                return waited, time.monotonic() - t0
            waited = True
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    # ------------------------------------------------------------------ one case
    def _fields(self, target: Target, test: EvalTest) -> dict[str, Any]:
        fields = {k: v for k, v in target.config.items() if k in BODY_KEYS}
        fields.update({k: v for k, v in test.options.items() if k in BODY_KEYS})
        return fields

    def _request(
        self, target: Target, test: EvalTest, prompt: Prompt, variables: dict[str, Any], where: str
    ) -> tuple[str, dict[str, Any], str]:
        """(path, httpx keyword arguments, prompt text as stored)."""
        messages = render_messages(prompt, variables, where=where)
        endpoint = test.options.get("endpoint", "chat")
        if endpoint == "chat":
            body = {"model": target.route, "messages": messages, **self._fields(target, test)}
            return "/v1/chat/completions", {"json": body}, _shorten(_dump(messages))
        text = _prompt_text(messages)
        audio_var = test.options.get("audio", "audio")
        if audio_var not in variables:
            raise SuiteError(f"{where}: endpoint {endpoint} needs var {audio_var!r} (a file:// WAV)")
        files: list[tuple[str, tuple[str, bytes, str]]] = [
            ("file", ("clip.wav", base64.b64decode(variables[audio_var]), "audio/wav"))
        ]
        data: dict[str, str] = {"model": target.route}
        if endpoint == "audio_qa":
            data["prompt"] = text
            image_var = test.options.get("image")
            if image_var:
                if image_var not in variables:
                    raise SuiteError(f"{where}: options.image names var {image_var!r}, which the test does not set")
                files.append(("image", ("image.png", base64.b64decode(variables[image_var]), "image/png")))
            return "/v1/audio_qa", {"data": data, "files": files}, text
        return "/v1/audio/transcriptions", {"data": data, "files": files}, "(transcribe)"

    async def _case(
        self, client: httpx.AsyncClient, index: int, target: Target, rep: int, ti: int, pi: int
    ) -> CaseResult:
        raw_test = self.suite.tests[ti]
        test = self.suite.merged(raw_test)
        prompt = self.suite.prompts[pi]
        desc = test.description or f"test {ti + 1}"
        where = f"{self.suite.label()}: {desc}"
        case = CaseResult(
            index=index,
            target=target.label,
            route=target.route,
            host=target.host,
            test_idx=ti,
            prompt_idx=pi,
            repeat_idx=rep,
            description=desc,
            vars=dict(test.vars),
            prompt="",
            time=time.time(),
        )
        try:
            variables = {k: load_var(v, self.suite.base_dir) for k, v in test.vars.items()}
            path, kwargs, case.prompt = self._request(target, test, prompt, variables, where)
        except SuiteError as exc:
            case.error = str(exc)
            case.reason = case.error
            return case
        headers = {}
        if target.host:
            headers = {"x-forge-placement": target.host, "x-forge-admin-token": self.admin_token or ""}
        timeout = float(test.options.get("timeout_s") or self.timeout_s)
        resp: httpx.Response | None = None
        while True:
            # What /health said just before sending: a backend that finishes starting between our request's
            # 502 and the next look at /health was still starting when it answered.
            before = await self._health(client)
            waited, secs = await self._wait(client, self._backends_for(target), until_ready=False)
            case.waited_s += secs
            case.startup_waits += int(waited)
            t0 = time.perf_counter()
            try:
                resp = await client.post(path, headers=headers, timeout=timeout, **kwargs)
            except httpx.TimeoutException:
                case.latency_ms = (time.perf_counter() - t0) * 1000
                case.error = f"no answer within {timeout:g}s (per-case timeout)"
                break
            except httpx.HTTPError as exc:
                case.error = f"gateway unreachable: {exc.__class__.__name__}: {exc}"
                break
            case.latency_ms = (time.perf_counter() - t0) * 1000
            route = parse_route_header(resp.headers.get("x-forge-route"))
            if route.get("backend"):
                self._learned.setdefault(target, set()).add(route["backend"])
            case.served_model, case.served_host = route.get("model"), route.get("host")
            case.served_backend = route.get("backend")
            case.request_id = resp.headers.get("x-forge-request-id")
            if resp.status_code == 429 and case.saturation_retries < self.max_saturation_retries:
                ra = resp.headers.get("retry-after", "")
                pause = min(float(ra) if ra.isdigit() else 1.0, 30.0)
                await asyncio.sleep(max(pause, self.backoff_s * 2**case.saturation_retries))
                case.saturation_retries += 1
                continue
            if resp.status_code in (502, 503) and case.startup_waits < self.max_startup_waits:
                _, code = _error_of(resp)
                backends = {route["backend"]} if route.get("backend") else self._backends_for(target)
                health = await self._health(client)
                starting = code in _STARTUP_CODES or any("starting" in (health.get(b), before.get(b)) for b in backends)
                if starting:
                    _, secs = await self._wait(client, backends, until_ready=True)
                    case.waited_s += secs
                    case.startup_waits += 1
                    continue
            break
        if resp is not None and case.error is None:
            self._score_response(case, resp, test, target)
        elif case.error is not None:
            case.reason = case.error
        return case

    def _score_response(self, case: CaseResult, resp: httpx.Response, test: EvalTest, target: Target) -> None:
        case.status = resp.status_code
        expect = test.options.get("expect_status")
        if expect is not None:
            if resp.status_code != expect:
                case.error = f"expected HTTP {expect}, got {resp.status_code}"
                if resp.status_code >= 400:
                    case.error += f": {_error_of(resp)[0]}"
                case.reason = case.error
                return
            case.output = _error_of(resp)[0] if resp.status_code >= 400 else resp.text
        elif resp.status_code != 200:
            msg, code = _error_of(resp)
            case.error = f"HTTP {resp.status_code}" + (f" {code}" if code else "") + f": {msg}"
            case.reason = case.error
            return
        else:
            try:
                case.output, body = _answer(resp)
            except ValueError as exc:
                case.error = f"malformed answer: {exc}"
                case.reason = case.error
                return
            self._usage(case, body)
        ctx = AssertContext(
            vars=case.vars,
            prompt=case.prompt,
            latency_ms=case.latency_ms,
            status=case.status,
            route=target.route,
            host=case.served_host,
            base_dir=self.suite.base_dir,
            test=test.model_dump(by_alias=True),
        )
        case.assertions = [evaluate(a, case.output, ctx) for a in test.assert_]
        s = score_test(case.assertions, test.threshold)
        case.success, case.score, case.reason = s.passed, s.score, s.reason

    @staticmethod
    def _usage(case: CaseResult, body: dict[str, Any]) -> None:
        u, t = body.get("usage"), body.get("timings")
        usage: dict[str, Any] = u if isinstance(u, dict) else {}
        timings: dict[str, Any] = t if isinstance(t, dict) else {}
        pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
        case.tokens_in = pt if isinstance(pt, int) else None
        case.tokens_out = ct if isinstance(ct, int) else None
        pps = timings.get("predicted_per_second")
        if isinstance(pps, (int, float)) and pps > 0:
            case.tokens_per_s = float(pps)
        elif case.tokens_out and case.latency_ms > 0:
            case.tokens_per_s = case.tokens_out / (case.latency_ms / 1000)


def _dump(messages: list[dict[str, Any]]) -> str:
    return json.dumps(messages, ensure_ascii=False)
