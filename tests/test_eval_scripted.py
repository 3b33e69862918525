"""The eval harness through a real gateway against scripted upstreams (vision, audio, startup, compare, pin).

The upstreams are stand-ins (tests/support/scripted_upstream.py) because no vision or audio
model can run here and a startup window must come on a schedule; the gateway, its routing,
health prober, audio cap and telemetry are the real ones.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jsonschema
import pytest

from forge_tui.evals import store
from forge_tui.evals.export import to_markdown, to_promptfoo
from forge_tui.evals.runner import EvalRunner, Target
from forge_tui.evals.suite import SuiteError, load_suite, parse_suite
from forge_tui.evals.summary import summarize
from tests.support.gateway_harness import Harness, make_catalog, running_gateway
from tests.support.scripted_upstream import Answer, ScriptedUpstream

EVALS = Path(__file__).resolve().parent.parent / "evals"
SCHEMA = json.loads((Path(__file__).parent / "support" / "promptfoo_v3.schema.json").read_text())
TOKEN = "eval-admin-token"


@dataclass
class Lab:
    gw: Harness
    furnace: ScriptedUpstream
    anvil: ScriptedUpstream


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    furnace = await ScriptedUpstream("furnace").start()
    anvil = await ScriptedUpstream("anvil").start()
    local = {"address": "127.0.0.1", "platform": "cpu", "memory_budget_gb": 8, "transport": "local"}
    cat = make_catalog(
        backends={
            "fa": {"base_url": furnace.url, "host": "furnace", "warmup_timeout_s": 0.3},
            "an": {"base_url": anvil.url, "host": "anvil", "warmup_timeout_s": 0.3},
        },
        models={
            "vlm-big": {
                "capabilities": ["chat", "vision", "audio"],
                "placements": [{"backend": "fa"}, {"backend": "an"}],
            },
            "vlm-small": {"capabilities": ["chat", "vision", "audio"], "placements": [{"backend": "an"}]},
        },
        roles={
            "vision": {"model": "vlm-big"},
            "audio-qa": {"model": "vlm-big"},
            "default-chat": {"model": "vlm-small"},
        },
        hosts={"furnace": local, "anvil": local},
        gateway={"health_interval_s": 0.05},
    )
    async with running_gateway(cat, admin_token=TOKEN) as h:
        h.gw.openai.allow_placement(h.admin.token)  # what the runtime does for the admin API it mounts
        await h.gw.prober.probe_all()
        yield Lab(h, furnace, anvil)
    await furnace.stop()
    await anvil.stop()


def _vlm_script(up: ScriptedUpstream) -> None:
    up.script = {
        "bar chart": Answer("Apr 47"),
        "function defined": Answer("do_backup Python"),  # wrong function name: a failed case, not an error
        "network": Answer(malformed=True),
    }


async def test_vlm_suite_scores_pass_fail_and_malformed_sequentially(lab: Lab) -> None:
    _vlm_script(lab.furnace)
    suite = load_suite(EVALS / "vlm-bench.yaml")
    run = await EvalRunner(lab.gw.url, suite, [Target("vision")]).run()
    by = {c.description.split(" - ")[0]: c for c in run.cases}
    assert by["bar chart"].success and by["bar chart"].error is None
    code = by["code screenshot"]
    assert not code.success and code.error is None and code.output == "do_backup Python"
    assert [o.passed for o in code.assertions] == [False, True]
    topo = by["homelab topology"]
    assert topo.error is not None and "malformed" in topo.error and not topo.success
    assert all(c.startup_waits == 0 and c.saturation_retries == 0 for c in run.cases)
    assert lab.furnace.max_active == 1 and len(lab.furnace.requests) == 3  # sequential, nothing retried
    # the image went through as a data URL and the source header reached the gateway's records
    assert all(r.source == "bench" for r in await lab.gw.wait_records(3))
    assert {c.served_host for c in run.cases} == {"furnace"}


async def test_audio_suite_with_image_and_the_413_cap(lab: Lab) -> None:
    lab.furnace.script = {
        "Transcribe this clip word for word": Answer("The backup on furnace finished at seven fifteen."),
        "At what time": Answer("7:15"),
        "names a host": Answer("furnace; the highest month is Apr"),
    }
    run = await EvalRunner(lab.gw.url, load_suite(EVALS / "audio-bench.yaml"), [Target("audio-qa")]).run()
    assert [c.success for c in run.cases] == [True, True, True, True], [c.reason for c in run.cases]
    refused = run.cases[3]
    assert refused.status == 413 and "at most 30 s" in refused.output
    # the 60 s clip never reached the backend; the audio + image case sent both parts
    assert len(lab.furnace.requests) == 3
    assert lab.furnace.requests[2]["fields"]["image"] == "image.png"
    assert lab.furnace.requests[2]["fields"]["file"] == "clip.wav"


async def test_backend_starting_mid_run_yields_no_502(lab: Lab) -> None:
    """The backend is in its startup window when the run begins (its proxy answers 502) and comes up
    right after that answer: the runner saw it starting just before sending, so it waits, retries, and
    the results hold no 502."""
    _vlm_script(lab.furnace)
    lab.furnace.start_loading()
    await lab.gw.gw.prober.probe_all()
    assert (await httpx.AsyncClient().get(lab.gw.url + "/health")).json()["backends"]["fa"] == "starting"
    lab.furnace.finish_after_502s = 1  # up right after its first 502, and the gateway already knows it:
    lab.furnace.on_ready = lab.gw.gw.prober.probe_all  # /health says ready by the time the runner looks
    run = await EvalRunner(
        lab.gw.url, load_suite(EVALS / "vlm-bench.yaml"), [Target("vision")], startup_wait_s=30
    ).run()
    assert all(c.status != 502 for c in run.cases)
    assert lab.furnace.answered_during_loading == 1  # one 502 reached the runner, none reached the results
    assert run.cases[0].startup_waits == 1 and run.cases[0].success
    # later cases knew the backend from x-forge-route and found it ready
    assert [c.success for c in run.cases] == [True, False, False]


async def test_startup_window_between_cases_is_waited_out_before_sending(lab: Lab) -> None:
    _vlm_script(lab.furnace)
    seen_during_loading: list[int] = []

    async def on_case(case, done, total):  # type: ignore[no-untyped-def]
        if done == 1:
            lab.furnace.start_loading()
            await lab.gw.gw.prober.probe_all()
            asyncio.get_running_loop().call_later(0.3, lab.furnace.finish_loading)
            seen_during_loading.append(len(lab.furnace.requests))

    run = await EvalRunner(
        lab.gw.url, load_suite(EVALS / "vlm-bench.yaml"), [Target("vision")], on_case=on_case, startup_wait_s=30
    ).run()
    assert run.cases[1].startup_waits == 1 and run.cases[1].error is None
    # nothing was sent while the backend was loading: the second request came after the window
    assert len(lab.furnace.requests) == 3 and seen_during_loading == [1]
    assert all(c.status != 502 for c in run.cases)


async def test_slow_answer_hits_the_per_case_timeout_and_is_not_retried(lab: Lab) -> None:
    lab.anvil.script = {"slow": Answer("late", delay_s=3.0), "quick": Answer("fine")}
    suite = parse_suite(
        {
            "prompts": ["{{q}}"],
            "providers": ["default-chat"],
            "tests": [
                {
                    "description": "slow",
                    "vars": {"q": "slow one"},
                    "options": {"timeout_s": 0.3},
                    "assert": [{"type": "equals", "value": "late"}],
                },
                {"description": "quick", "vars": {"q": "quick one"}, "assert": [{"type": "equals", "value": "fine"}]},
            ],
        }
    )
    run = await EvalRunner(lab.gw.url, suite, [Target("default-chat")]).run()
    assert run.cases[0].error is not None and "0.3s" in run.cases[0].error
    assert run.cases[1].success
    assert [r["text"] for r in lab.anvil.requests] == ["slow one", "quick one"]


async def test_saturation_is_retried_with_backoff_and_counted(lab: Lab) -> None:
    lab.anvil.default = Answer(status=429)
    suite = parse_suite({"prompts": ["hi"], "tests": [{"assert": [{"type": "contains", "value": "x"}]}]})
    run = await EvalRunner(lab.gw.url, suite, [Target("default-chat")], max_saturation_retries=2, backoff_s=0.01).run()
    c = run.cases[0]
    assert c.saturation_retries == 2 and c.status == 429 and c.error is not None
    assert len(lab.anvil.requests) == 3


async def test_compare_two_routes_side_by_side(lab: Lab) -> None:
    _vlm_script(lab.furnace)
    lab.anvil.default = Answer("Apr 47 rotate_backups Python")
    run = await EvalRunner(
        lab.gw.url, load_suite(EVALS / "vlm-bench.yaml"), [Target("vision"), Target("default-chat")]
    ).run()
    rows = {r.target: r for r in summarize(run.cases)}
    assert rows["vision"].passed == 1 and rows["vision"].errors == 1 and rows["vision"].served == "vlm-big@furnace"
    assert rows["default-chat"].passed == 2 and rows["default-chat"].served == "vlm-small@anvil"
    assert rows["vision"].p50_ms is not None and rows["default-chat"].tokens_per_s == 50.0
    # targets run one after the other: every vision case before any default-chat case
    assert [c.target for c in run.cases] == ["vision"] * 3 + ["default-chat"] * 3


async def test_placement_pin_needs_the_admin_token(lab: Lab) -> None:
    body = {"model": "vision", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=lab.gw.url) as c:
        r = await c.post("/v1/chat/completions", json=body, headers={"x-forge-placement": "anvil"})
        assert r.status_code == 403
        err = r.json()["error"]
        assert err["code"] == "placement_forbidden" and err["type"] == "permission_error" and err["param"]
        r = await c.post(
            "/v1/chat/completions",
            json=body,
            headers={"x-forge-placement": "anvil", "x-forge-admin-token": "wrong"},
        )
        assert r.status_code == 403
        r = await c.post(
            "/v1/chat/completions", json=body, headers={"x-forge-placement": "anvil", "x-forge-admin-token": TOKEN}
        )
        assert r.status_code == 200 and "host=anvil" in r.headers["x-forge-route"]
        r = await c.post(
            "/v1/chat/completions", json=body, headers={"x-forge-placement": "crucible", "x-forge-admin-token": TOKEN}
        )
        assert r.status_code == 404 and r.json()["error"]["code"] == "placement_not_found"
        r = await c.post("/v1/chat/completions", json=body)  # no pin: the first placement
        assert "host=furnace" in r.headers["x-forge-route"]
    assert len(lab.anvil.requests) == 1 and len(lab.furnace.requests) == 1


async def test_compare_one_model_pinned_to_two_hosts(lab: Lab) -> None:
    lab.furnace.default = Answer("Apr 47")
    lab.anvil.default = Answer("Mar 18")
    suite = load_suite(EVALS / "vlm-bench.yaml")
    with pytest.raises(SuiteError, match="admin token"):
        EvalRunner(lab.gw.url, suite, [Target("vlm-big", "furnace")])
    run = await EvalRunner(
        lab.gw.url, suite, [Target("vlm-big", "furnace"), Target("vlm-big", "anvil")], admin_token=TOKEN
    ).run()
    rows = {r.target: r for r in summarize(run.cases)}
    assert rows["vlm-big@furnace"].passed == 1 and rows["vlm-big@anvil"].passed == 0
    assert {c.served_host for c in run.cases if c.host == "anvil"} == {"anvil"}
    assert len(lab.furnace.requests) == 3 and len(lab.anvil.requests) == 3


async def test_promptfoo_shaped_config_parsed_and_run(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "check.py").write_text(
        "def get_assert(output, context):\n"
        "    return {'pass': context['vars']['city'] in output, 'score': 1.0, 'reason': 'city named'}\n"
    )
    (tmp_path / "promptfooconfig.yaml").write_text(
        """
description: promptfoo-shaped
prompts:
  - id: file://prompt.txt
    label: city prompt
providers:
  - id: openai:chat:default-chat
    config: {apiBaseUrl: http://127.0.0.1:1/v1, temperature: 0, max_tokens: 32}
defaultTest:
  assert:
    - type: not-icontains
      value: "<think>"
evaluateOptions: {maxConcurrency: 1}
sharing: false
tests:
  - description: capital
    vars: {city: Lisbon}
    assert:
      - {type: icontains, value: lisbon, weight: 2}
      - {type: python, value: file://check.py}
      - {type: latency, threshold: 60000}
      - {type: contains-any, value: [Portugal, Spain], weight: 0}
"""
    )
    (tmp_path / "prompt.txt").write_text("What is the capital of Portugal? The answer is {{city}}.")
    lab.anvil.default = Answer("Lisbon")
    suite = load_suite(tmp_path / "promptfooconfig.yaml")
    assert suite.providers[0].route == "default-chat" and suite.prompts[0].label == "city prompt"
    run = await EvalRunner(lab.gw.url, suite, [Target("default-chat", config=suite.providers[0].config)]).run()
    c = run.cases[0]
    assert c.success and c.assertions[0].type == "not-icontains"
    assert [o.passed for o in c.assertions] == [True, True, True, True, False]  # weight 0 is informational
    sent = lab.anvil.requests[0]["text"]
    assert sent == "What is the capital of Portugal? The answer is Lisbon."


async def test_results_stored_exported_as_promptfoo_v3_and_markdown(lab: Lab, tmp_path: Path) -> None:
    _vlm_script(lab.furnace)
    lab.anvil.default = Answer("Apr 47 rotate_backups python")
    run = await EvalRunner(
        lab.gw.url, load_suite(EVALS / "vlm-bench.yaml"), [Target("vision"), Target("default-chat")]
    ).run()
    db = tmp_path / "history.sqlite3"
    store.save_run(db, run)
    # the file stays a forge-tui history the gateway's telemetry accepts
    from forge_tui.telemetry import Telemetry

    tel = Telemetry(db)
    await tel.start()
    await tel.close()
    assert [r.id for r in store.list_runs(db)] == [run.id]
    back = store.load_run(db, run.id[:12])
    assert [(c.success, c.output, c.served_model) for c in back.cases] == [
        (c.success, c.output, c.served_model) for c in run.cases
    ]
    assert [o.reason for o in back.cases[1].assertions] == [o.reason for o in run.cases[1].assertions]
    assert store.pass_rates(db, None, None) == {"vlm-big": (1, 3), "vlm-small": (2, 3)}
    assert store.pass_rates(db, run.finished_at + 1, None) == {}
    assert store.pass_rates(tmp_path / "missing.sqlite3", None, None) == {}
    doc = to_promptfoo(back)
    jsonschema.validate(doc, SCHEMA)
    res = doc["results"]
    assert res["version"] == 3 and len(res["results"]) == 6 and len(res["prompts"]) == 2
    assert res["stats"]["successes"] == 3 and res["stats"]["errors"] == 1
    assert {p["provider"] for p in res["prompts"]} == {"forge:vision", "forge:default-chat"}
    topo = next(r for r in res["results"] if r["testIdx"] == 2 and r["provider"]["id"] == "forge:vision")
    assert topo["failureReason"] == 2 and "error" in topo
    assert "base64" in topo["prompt"]["raw"] and len(topo["prompt"]["raw"]) < 2000  # blobs shortened
    md = to_markdown(back)
    assert "| vision | 1/3 | 33% |" in md and "vlm-small@anvil" in md


async def test_pinned_run_waits_for_the_starting_host_before_the_first_request(lab: Lab) -> None:
    """With the admin token the runner knows a target's backends before any answer (the admin
    snapshot), so even the first case waits out the startup window instead of sending into it."""
    lab.anvil.default = Answer("Apr 47")
    lab.anvil.start_loading()
    await lab.gw.gw.prober.probe_all()
    sent_while_loading: list[int] = []

    def finish() -> None:
        sent_while_loading.append(len(lab.anvil.requests))
        lab.anvil.finish_loading()

    asyncio.get_running_loop().call_later(0.4, finish)
    suite = load_suite(EVALS / "vlm-bench.yaml")
    run = await EvalRunner(lab.gw.url, suite, [Target("vlm-big", "anvil")], admin_token=TOKEN, startup_wait_s=30).run()
    assert sent_while_loading == [0]
    assert run.cases[0].startup_waits == 1 and run.cases[0].error is None
    assert all(c.status == 200 and c.served_host == "anvil" for c in run.cases)


async def test_concurrency_and_repeat_options(lab: Lab) -> None:
    lab.anvil.default = Answer("fine", delay_s=0.2)
    suite = parse_suite(
        {
            "prompts": ["{{q}}"],
            "tests": [{"vars": {"q": f"q{i}"}, "assert": [{"type": "equals", "value": "fine"}]} for i in range(3)],
        }
    )
    run = await EvalRunner(lab.gw.url, suite, [Target("default-chat")], concurrency=3, repeat=2).run()
    assert len(run.cases) == 6 and all(c.success for c in run.cases)
    assert sorted(c.repeat_idx for c in run.cases) == [0, 0, 0, 1, 1, 1]
    assert lab.anvil.max_active > 1  # only when asked: the default is one at a time


async def test_the_413_cap_is_part_of_the_contract(lab: Lab) -> None:
    """A gateway whose audio cap lets the 60 s clip through fails that case: expected 413, got 200."""
    lab.furnace.default = Answer("a long silence")
    base = lab.gw.state.catalog
    cat = base.model_copy(update={"gateway": base.gateway.model_copy(update={"audio_max_seconds": 120})})
    suite = load_suite(EVALS / "audio-bench.yaml")
    async with running_gateway(cat) as loose:
        run = await EvalRunner(loose.url, suite, [Target("audio-qa")]).run()
    long = run.cases[3]
    assert not long.success and long.error == "expected HTTP 413, got 200"
    assert len(lab.furnace.requests) == 4  # this time the clip reached the backend


async def test_cli_compare_prints_side_by_side_and_writes_markdown(lab: Lab, tmp_path: Path) -> None:
    _vlm_script(lab.furnace)
    lab.anvil.default = Answer("Apr 47 rotate_backups Python")
    md = tmp_path / "run.md"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "forge_tui",
        "eval",
        "run",
        "vlm-bench",
        "--url",
        lab.gw.url,
        "--route",
        "vision",
        "--route",
        "default-chat",
        "--db",
        str(tmp_path / "h.sqlite3"),
        "-o",
        str(md),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    text = out.decode()
    assert proc.returncode == 1, text + err.decode()  # not every case passed
    lines = {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.startswith(("vision ", "default-chat "))}
    assert lines["vision"][1:3] == ["1/3", "33%"] and lines["default-chat"][1:3] == ["2/3", "67%"]
    assert "stored as eval-" in text
    assert "| default-chat | 2/3 | 67% |" in md.read_text()
    [row] = store.list_runs(tmp_path / "h.sqlite3")
    assert row.targets == ["vision", "default-chat"] and row.passed == 3 and row.total == 6


async def test_cli_refuses_an_unknown_route_before_running(lab: Lab) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "forge_tui",
        "eval",
        "run",
        "vlm-bench",
        "--url",
        lab.gw.url,
        "--route",
        "visoin",
        "--no-store",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 2 and "no route 'visoin'" in err.decode() and "vision" in err.decode()
    assert lab.furnace.requests == [] and lab.anvil.requests == []
