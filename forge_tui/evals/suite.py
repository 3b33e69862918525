"""An eval suite: the documented subset of promptfoo's config, validated with pydantic.

Kept from promptfoo: ``description``, ``prompts``, ``providers``, ``tests`` (``description``,
``vars``, ``assert``, ``options``, ``threshold``, ``metadata``), ``defaultTest`` and
``evaluateOptions.maxConcurrency`` / ``repeat`` / ``timeoutMs``. A provider is a route through
the gateway: a role or a model id, written bare (``default-chat``) or promptfoo-style
(``openai:chat:default-chat``, ``forge:default-chat``), with an optional ``config`` of request
fields (``temperature``, ``max_tokens``, ``seed``...). Keys promptfoo has but this harness does
not run (``scenarios``, ``extensions``, ``redteam``, ``tests`` from a file...) are an error, never
silently dropped; keys that only concern promptfoo's own tooling (``sharing``, ``outputPath``...)
are accepted and ignored.

forge extensions, all under a test's ``options`` (promptfoo passes unknown option keys through):
``endpoint`` (``chat``, ``audio_qa``, ``transcriptions``), ``audio`` / ``image`` (the var holding
the clip / picture for ``audio_qa``), ``expect_status`` (an HTTP status the case must get, e.g. 413)
and ``timeout_s``.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "ASSERTION_TYPES",
    "Assertion",
    "EvalTest",
    "Prompt",
    "Provider",
    "Suite",
    "SuiteError",
    "load_suite",
    "load_var",
    "parse_suite",
    "render",
    "render_messages",
    "route_of",
]

# The assertion types this harness scores (each may also be written ``not-<type>`` except latency/python).
ASSERTION_TYPES = (
    "equals",
    "contains",
    "icontains",
    "contains-any",
    "contains-all",
    "regex",
    "starts-with",
    "is-json",
    "contains-json",
    "latency",
    "python",
)
_NO_INVERSE = frozenset({"latency", "python"})
_IGNORED_KEYS = frozenset(
    {"sharing", "outputPath", "env", "tags", "metadata", "writeLatestResults", "commandLineOptions", "$schema"}
)
_UNSUPPORTED_KEYS = {
    "scenarios": "scenarios (write the cases out as tests)",
    "extensions": "extensions (hooks run inside promptfoo)",
    "redteam": "redteam generation",
    "derivedMetrics": "derivedMetrics",
    "nunjucksFilters": "nunjucks filters",
    "targets": "targets (use providers)",
    "tracing": "tracing",
}
ENDPOINTS = ("chat", "audio_qa", "transcriptions")
_PROVIDER_PREFIXES = ("openai:chat:", "openai:", "forge:")
_BINARY_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".wav", ".mp3", ".flac", ".ogg"})
_VAR_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class SuiteError(ValueError):
    """A suite that cannot be run; the message names the file and the test."""


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Assertion(_M):
    type: str
    value: Any = None
    threshold: float | None = None
    weight: float = Field(1.0, ge=0)
    metric: str | None = None

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        base = v.removeprefix("not-")
        if base not in ASSERTION_TYPES or (v.startswith("not-") and base in _NO_INVERSE):
            raise ValueError(f"unknown assertion type {v!r} (supported: {', '.join(ASSERTION_TYPES)}, not-<type>)")
        return v

    @model_validator(mode="after")
    def _needs(self) -> Assertion:
        base = self.type.removeprefix("not-")
        if base == "latency" and self.threshold is None:
            raise ValueError("a latency assertion needs threshold (milliseconds)")
        if base in ("contains-any", "contains-all") and not isinstance(self.value, list):
            raise ValueError(f"{self.type} needs value: a list of strings")
        if base in ("equals", "contains", "icontains", "regex", "starts-with", "python") and self.value is None:
            raise ValueError(f"{self.type} needs a value")
        if base == "regex":
            try:
                re.compile(str(self.value))
            except re.error as exc:
                raise ValueError(f"regex {self.value!r} does not compile: {exc}") from None
        return self


class EvalTest(_M):
    description: str | None = None
    vars: dict[str, Any] = {}
    assert_: list[Assertion] = Field([], alias="assert")
    options: dict[str, Any] = {}
    threshold: float | None = None
    metadata: dict[str, Any] = {}

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, Any]) -> dict[str, Any]:
        ep = v.get("endpoint", "chat")
        if ep not in ENDPOINTS:
            raise ValueError(f"options.endpoint {ep!r} is not one of {', '.join(ENDPOINTS)}")
        st = v.get("expect_status")
        if st is not None and not (isinstance(st, int) and 100 <= st <= 599):
            raise ValueError(f"options.expect_status must be an HTTP status, got {st!r}")
        return v


class Prompt(_M):
    raw: str
    label: str
    messages: list[dict[str, Any]] | None = None  # a chat prompt (raw is its JSON); else raw is the user turn


class Provider(_M):
    id: str
    label: str | None = None
    config: dict[str, Any] = {}

    @property
    def route(self) -> str:
        return route_of(self.id)


class Suite(_M):
    description: str | None = None
    prompts: list[Prompt]
    providers: list[Provider] = []
    tests: list[EvalTest]
    default_test: EvalTest | None = Field(None, alias="defaultTest")
    max_concurrency: int | None = None
    repeat: int = 1
    timeout_ms: float | None = None
    path: str | None = None
    base_dir: str = "."
    raw: dict[str, Any] = {}  # the file as written (exported as promptfoo's ``config``)

    def merged(self, test: EvalTest) -> EvalTest:
        """``defaultTest`` under ``test``: vars and options merged, default assertions first."""
        d = self.default_test
        if d is None:
            return test
        skip_defaults = bool(test.options.get("disableDefaultAsserts"))
        return EvalTest(
            description=test.description,
            vars={**d.vars, **test.vars},
            assert_=([] if skip_defaults else list(d.assert_)) + list(test.assert_),
            options={**d.options, **test.options},
            threshold=test.threshold if test.threshold is not None else d.threshold,
            metadata={**d.metadata, **test.metadata},
        )

    def label(self) -> str:
        if self.path:
            return Path(self.path).stem
        return self.description or "suite"


def route_of(provider_id: str) -> str:
    """``openai:chat:default-chat`` -> ``default-chat``: the gateway route a provider id names."""
    for p in _PROVIDER_PREFIXES:
        if provider_id.startswith(p):
            return provider_id[len(p) :]
    return provider_id


def _read_ref(ref: str, base: Path) -> Path:
    p = Path(ref.removeprefix("file://")).expanduser()
    return p if p.is_absolute() else base / p


def _prompt(item: Any, i: int, base: Path) -> Prompt:
    label: str | None = None
    if isinstance(item, dict):
        label = item.get("label") or item.get("id")
        raw = item.get("raw")
        if raw is None and isinstance(item.get("id"), str) and item["id"].startswith("file://"):
            raw = item["id"]
        if not isinstance(raw, str):
            raise SuiteError(f"prompt {i + 1}: expected raw: <text> or id: file://...")
    elif isinstance(item, str):
        raw = item
    else:
        raise SuiteError(f"prompt {i + 1}: expected a string or a mapping, got {type(item).__name__}")
    if raw.startswith("file://"):
        path = _read_ref(raw, base)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SuiteError(f"prompt {i + 1}: cannot read {path}: {exc.strerror or exc}") from None
        label = label or raw
        raw = json.dumps(yaml.safe_load(text)) if path.suffix in (".yaml", ".yml") else text
    messages: list[dict[str, Any]] | None = None
    stripped = raw.strip()
    if stripped.startswith("["):
        try:
            parsed = json.loads(stripped)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(m, dict) and "role" in m for m in parsed):
            messages = parsed
    return Prompt(raw=raw, label=label or (raw if len(raw) <= 60 else raw[:57] + "..."), messages=messages)


def _provider(item: Any, i: int) -> Provider:
    if isinstance(item, str):
        return Provider(id=item)
    if isinstance(item, dict):
        if "id" not in item and len(item) == 1:  # promptfoo's {"openai:chat:x": {config...}} shorthand
            ((pid, conf),) = item.items()
            conf = conf if isinstance(conf, dict) else {}
            return Provider(id=pid, label=conf.get("label"), config=conf.get("config", {}))
        try:
            return Provider.model_validate({k: v for k, v in item.items() if k in ("id", "label", "config")})
        except ValidationError as exc:
            raise SuiteError(f"provider {i + 1}: {exc.errors()[0]['msg']}") from None
    raise SuiteError(f"provider {i + 1}: expected a route name or a mapping with id")


def _where(data: dict[str, Any], loc: tuple[Any, ...]) -> str:
    """A pydantic error location as the operator reads it: which test, which assertion."""
    if len(loc) >= 2 and loc[0] == "tests" and isinstance(loc[1], int):
        tests = data.get("tests") or []
        desc = tests[loc[1]].get("description") if loc[1] < len(tests) and isinstance(tests[loc[1]], dict) else None
        head = f"test {loc[1] + 1}" + (f" ({desc!r})" if desc else "")
        rest = loc[2:]
    elif loc and loc[0] == "defaultTest":
        head, rest = "defaultTest", loc[1:]
    else:
        head, rest = ".".join(str(x) for x in loc) or "suite", ()
    if len(rest) >= 2 and rest[0] == "assert" and isinstance(rest[1], int):
        head += f", assertion {rest[1] + 1}"
        rest = rest[2:]
    tail = ".".join(str(x) for x in rest)
    return f"{head}: {tail}" if tail else head


def parse_suite(data: Any, *, source: str = "<suite>", base_dir: str | Path = ".") -> Suite:
    if not isinstance(data, dict):
        raise SuiteError(f"{source}: expected a mapping (prompts, providers, tests...)")
    base = Path(base_dir)
    for key, what in _UNSUPPORTED_KEYS.items():
        if key in data:
            raise SuiteError(f"{source}: {what} is not supported by forge-tui eval")
    tests = data.get("tests")
    if not isinstance(tests, list):
        raise SuiteError(f"{source}: tests must be a list written in the suite (tests from a file are not supported)")
    try:
        prompts = [_prompt(p, i, base) for i, p in enumerate(_as_list(data.get("prompts")))]
        providers = [_provider(p, i) for i, p in enumerate(_as_list(data.get("providers")))]
    except SuiteError as exc:
        raise SuiteError(f"{source}: {exc}") from None
    if not prompts:
        raise SuiteError(f"{source}: prompts is empty (at least one prompt, e.g. '{{{{question}}}}')")
    opts = data.get("evaluateOptions") or {}
    known = {"description", "prompts", "providers", "tests", "defaultTest", "evaluateOptions"}
    unknown = sorted(set(data) - known - _IGNORED_KEYS)
    if unknown:
        raise SuiteError(f"{source}: unknown top-level key(s): {', '.join(unknown)}")
    try:
        return Suite.model_validate(
            {
                "description": data.get("description"),
                "prompts": prompts,
                "providers": providers,
                "tests": tests,
                "defaultTest": data.get("defaultTest"),
                "max_concurrency": opts.get("maxConcurrency"),
                "repeat": opts.get("repeat", 1),
                "timeout_ms": opts.get("timeoutMs"),
                "path": None if source.startswith("<") else source,
                "base_dir": str(base),
                "raw": data,
            }
        )
    except ValidationError as exc:
        lines = [f"  {_where(data, tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise SuiteError(f"{source}: invalid suite ({len(lines)} error(s)):\n" + "\n".join(lines)) from None


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    if isinstance(v, list):
        return v
    if isinstance(v, dict):  # promptfoo's {file_or_text: label} prompt map
        return [{"raw": k, "label": lbl} for k, lbl in v.items()]
    return [v]


def load_suite(path: str | Path) -> Suite:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SuiteError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SuiteError(f"{p}: not valid YAML: {exc}") from None
    return parse_suite(data, source=str(p), base_dir=p.resolve().parent)


def load_var(value: Any, base_dir: str | Path) -> Any:
    """A ``file://`` var's content: text for text files, base64 for images and audio (as promptfoo does)."""
    if not (isinstance(value, str) and value.startswith("file://")):
        return value
    path = _read_ref(value, Path(base_dir))
    try:
        if path.suffix.lower() in _BINARY_SUFFIXES:
            return base64.b64encode(path.read_bytes()).decode()
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SuiteError(f"var {value}: cannot read {path}: {exc.strerror or exc}") from None


def render(template: str, variables: dict[str, Any], *, where: str) -> str:
    """``{{ name }}`` substitution (promptfoo's nunjucks, the part suites use); unknown names are an error."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in variables:
            raise SuiteError(f"{where}: the prompt uses {{{{{name}}}}} but the test sets no var {name!r}")
        v = variables[name]
        return v if isinstance(v, str) else json.dumps(v)

    return _VAR_RE.sub(sub, template)


def render_messages(prompt: Prompt, variables: dict[str, Any], *, where: str) -> list[dict[str, Any]]:
    """The chat messages for one case: a chat prompt rendered leaf by leaf, or one user turn."""
    if prompt.messages is None:
        return [{"role": "user", "content": render(prompt.raw, variables, where=where)}]

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return render(node, variables, where=where)
        if isinstance(node, list):
            return [walk(x) for x in node]
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        return node

    rendered: list[dict[str, Any]] = walk(prompt.messages)
    return rendered
