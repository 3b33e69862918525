"""The chat suite against the real llama.cpp server (Gemma 3 270M), temperature 0 and a fixed seed.

The expected outcomes are not hopes about a 270M model: a first direct run (openai SDK straight to
llama-server, same request fields) records what the model says, plain Python judges those answers,
and the harness, through the real gateway, must have received the same text and scored it the same.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from openai import OpenAI

from forge_tui.evals import store
from forge_tui.evals.runner import EvalRunner, Target
from forge_tui.evals.suite import parse_suite
from tests.support.gateway_harness import running_gateway, single_model_catalog

pytestmark = pytest.mark.llama

FIELDS = {"temperature": 0, "seed": 42, "max_tokens": 40}
SCHEMA = {
    "type": "object",
    "properties": {"host": {"type": "string"}, "error": {"type": "string"}},
    "required": ["host", "error"],
}
QUESTIONS = {
    "one word": "What is the capital of France? Answer with one word.",
    "number": "How many days does a leap year have? Answer with the number only.",
    "shape": 'Reply with "OK: " followed by the word ready.',
    "json": 'Extract host and error as JSON: "furnace: unknown model architecture gemma4"',
}


def _suite() -> dict:
    json_opts = {"response_format": {"type": "json_schema", "json_schema": {"name": "f", "schema": SCHEMA}}}
    return {
        "prompts": ["{{q}}"],
        "providers": [{"id": "openai:chat:default-chat", "config": FIELDS}],
        "defaultTest": {"assert": [{"type": "not-contains", "value": "<think>"}]},
        "tests": [
            {
                "description": "one word",
                "vars": {"q": QUESTIONS["one word"]},
                "assert": [{"type": "icontains", "value": "paris"}],
            },
            {
                "description": "number",
                "vars": {"q": QUESTIONS["number"]},
                "assert": [{"type": "regex", "value": "366"}],
            },
            {
                "description": "shape",
                "vars": {"q": QUESTIONS["shape"]},
                "assert": [{"type": "starts-with", "value": "OK:"}],
            },
            {
                "description": "json",
                "vars": {"q": QUESTIONS["json"]},
                "options": json_opts,
                "assert": [{"type": "is-json", "value": SCHEMA}, {"type": "icontains", "value": "furnace"}],
            },
        ],
    }


def _direct(url: str) -> dict[str, str]:
    client = OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=120)
    out = {}
    for name, q in QUESTIONS.items():
        extra = _suite()["tests"][3]["options"] if name == "json" else {}
        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": q}], **FIELDS, **extra)
        out[name] = r.choices[0].message.content or ""
    return out


def _judge(name: str, text: str) -> list[bool]:
    """The suite's assertions, judged by hand on the direct answers (independent of the harness code)."""
    no_think = "<think>" not in text
    if name == "one word":
        return [no_think, "paris" in text.lower()]
    if name == "number":
        return [no_think, "366" in text]
    if name == "shape":
        return [no_think, text.startswith("OK:")]
    try:
        obj = json.loads(text)
        shaped = isinstance(obj, dict) and isinstance(obj.get("host"), str) and isinstance(obj.get("error"), str)
    except ValueError:
        shaped = False
    return [no_think, shaped, "furnace" in text.lower()]


async def test_chat_suite_scores_what_the_model_said(llama_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    direct = _direct(llama_server.url)
    suite = parse_suite(_suite())
    async with running_gateway(single_model_catalog(llama_server.url)) as h:
        run = await EvalRunner(h.url, suite, [Target("default-chat", config=suite.providers[0].config)]).run()
        records = await h.wait_records(4)
    assert [r.source for r in records] == ["bench"] * 4
    for case in run.cases:
        assert case.error is None and case.status == 200
        assert case.output == direct[case.description], case.description  # same text as the direct run
        expected = _judge(case.description, case.output)
        assert [o.passed for o in case.assertions] == expected, (case.description, case.output)
        assert case.success == all(expected)
        assert case.tokens_out and case.tokens_per_s and case.served_model == "m"
    # grammar-constrained output is JSON whatever the 270M model knows
    assert run.cases[3].assertions[0].passed
    db = tmp_path / "h.sqlite3"
    store.save_run(db, run)
    passed = sum(c.success for c in run.cases)
    assert store.pass_rates(db, None, None) == {"m": (passed, 4)}


def test_cli_runs_a_suite_in_process_from_a_config(llama_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """forge-tui eval run --config: the real gateway started in this process, results stored and exported."""
    (tmp_path / "forge.yaml").write_text(
        f"""
gateway: {{health_interval_s: 1, state_dir: {tmp_path / "state"}}}
hosts: {{local: {{address: 127.0.0.1, platform: cpu, memory_budget_gb: 4, transport: local}}}}
backends: {{a: {{host: local, kind: llama-server, base_url: "{llama_server.url}"}}}}
families: {{gemma3: {{thinking: none}}}}
models: {{m: {{family: gemma3, architecture: gemma3, placements: [{{backend: a}}]}}}}
roles: {{default-chat: {{model: m}}}}
"""
    )
    (tmp_path / "s.yaml").write_text(
        json.dumps(
            {
                "prompts": ["{{q}}"],
                "providers": [{"id": "default-chat", "config": FIELDS}],
                "tests": [
                    {
                        "description": "capital",
                        "vars": {"q": QUESTIONS["one word"]},
                        "assert": [{"type": "icontains", "value": "paris"}],
                    }
                ],
            }
        )
    )
    out = tmp_path / "results.json"
    cmd = [
        sys.executable,
        "-m",
        "forge_tui",
        "eval",
        "run",
        str(tmp_path / "s.yaml"),
        "--config",
        str(tmp_path / "forge.yaml"),
    ]
    p = subprocess.run([*cmd, "-o", str(out)], capture_output=True, text=True, timeout=300)
    direct = _direct(llama_server.url)["one word"]
    assert p.returncode == (0 if "paris" in direct.lower() else 1), p.stdout + p.stderr
    assert "gateway started in-process" in p.stdout and "default-chat" in p.stdout
    doc = json.loads(out.read_text())
    assert doc["results"]["version"] == 3
    assert doc["results"]["results"][0]["response"]["output"] == direct
    db = tmp_path / "state" / "history.sqlite3"
    [row] = store.list_runs(db)
    show = subprocess.run(
        [sys.executable, "-m", "forge_tui", "eval", "show", row.id, "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert show.returncode == 0 and "capital" in show.stdout and row.id in show.stdout
