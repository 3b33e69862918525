"""Suite parsing and assertion scoring (no network), and the shipped suites against their fixtures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from forge_tui.evals.assertions import AssertContext, evaluate, score_test
from forge_tui.evals.fixtures import FIXTURES_DIR, check_fixtures, generate_fixtures
from forge_tui.evals.suite import Assertion, SuiteError, load_suite, parse_suite, render
from forge_tui.evals.summary import percentile

EVALS = Path(__file__).resolve().parent.parent / "evals"
CTX = AssertContext(
    vars={"city": "Lisbon"}, prompt="p", latency_ms=120.0, status=200, route="r", host="h", base_dir="."
)


def _a(**kw: object) -> Assertion:
    return Assertion.model_validate(kw)


def test_unknown_assertion_type_is_an_error_naming_the_test() -> None:
    data = {
        "prompts": ["{{q}}"],
        "tests": [
            {"description": "fine", "assert": [{"type": "contains", "value": "x"}]},
            {"description": "typo here", "assert": [{"type": "contains", "value": "x"}, {"type": "llm-rubric"}]},
        ],
    }
    with pytest.raises(SuiteError) as e:
        parse_suite(data, source="s.yaml")
    msg = str(e.value)
    assert "s.yaml" in msg and "test 2 ('typo here'), assertion 2" in msg and "'llm-rubric'" in msg


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"prompts": ["x"], "tests": "tests.csv"}, "tests from a file"),
        ({"prompts": ["x"], "tests": [], "scenarios": []}, "scenarios"),
        ({"prompts": ["x"], "tests": [], "outputs": 1}, "unknown top-level key(s): outputs"),
        ({"prompts": [], "tests": []}, "prompts is empty"),
        ({"prompts": ["x"], "tests": [{"assert": [{"type": "latency"}]}]}, "needs threshold"),
        ({"prompts": ["x"], "tests": [{"assert": [{"type": "regex", "value": "("}]}]}, "does not compile"),
        ({"prompts": ["x"], "tests": [{"options": {"endpoint": "fax"}}]}, "options.endpoint"),
        ({"prompts": ["x"], "tests": [{"assert": [{"type": "not-latency", "threshold": 1}]}]}, "not-latency"),
    ],
)
def test_invalid_suites_say_why(data: dict, needle: str) -> None:
    with pytest.raises(SuiteError) as e:
        parse_suite(data)
    assert needle in str(e.value)


def test_ignored_promptfoo_keys_and_provider_forms() -> None:
    s = parse_suite(
        {
            "prompts": {"Say {{q}}": "say"},
            "providers": ["openai:chat:default-chat", {"forge:vision": {"config": {"temperature": 0}}}],
            "tests": [{"vars": {"q": "hi"}}],
            "sharing": False,
            "outputPath": "x.json",
            "evaluateOptions": {"maxConcurrency": 4, "repeat": 2},
        }
    )
    assert [p.route for p in s.providers] == ["default-chat", "vision"]
    assert s.providers[1].config == {"temperature": 0}
    assert s.prompts[0].label == "say" and s.repeat == 2 and s.max_concurrency == 4


def test_render_names_the_missing_var() -> None:
    assert render("a {{ x }} b {{y}}", {"x": "1", "y": {"k": 2}}, where="t") == 'a 1 b {"k": 2}'
    with pytest.raises(SuiteError, match=r"\{\{z\}\}"):
        render("{{z}}", {}, where="suite: test 1")


def test_default_test_merges_under_each_test() -> None:
    s = parse_suite(
        {
            "prompts": ["{{q}}"],
            "defaultTest": {"vars": {"q": "d", "k": 1}, "assert": [{"type": "not-contains", "value": "<think>"}]},
            "tests": [
                {"vars": {"q": "mine"}, "assert": [{"type": "contains", "value": "x"}]},
                {"options": {"disableDefaultAsserts": True}},
            ],
        }
    )
    m = s.merged(s.tests[0])
    assert m.vars == {"q": "mine", "k": 1} and [a.type for a in m.assert_] == ["not-contains", "contains"]
    assert s.merged(s.tests[1]).assert_ == []


@pytest.mark.parametrize(
    ("kw", "output", "passed", "score"),
    [
        ({"type": "equals", "value": "Paris"}, "Paris", True, 1.0),
        ({"type": "equals", "value": {"a": 1}}, '{"a": 1}', True, 1.0),
        ({"type": "equals", "value": "Paris"}, "Paris.", False, 0.0),
        ({"type": "contains", "value": "ar"}, "Paris", True, 1.0),
        ({"type": "icontains", "value": "PARIS"}, "paris", True, 1.0),
        ({"type": "not-icontains", "value": "<think>"}, "<THINK>x", False, 0.0),
        ({"type": "contains-any", "value": ["x", "Par"]}, "Paris", True, 1.0),
        ({"type": "contains-all", "value": ["a", "b", "c", "d"]}, "ab", False, 0.5),
        ({"type": "contains-all", "value": ["a", "b", "c", "d"], "threshold": 0.5}, "ab", True, 0.5),
        ({"type": "regex", "value": r"^\d+$"}, "366", True, 1.0),
        ({"type": "starts-with", "value": "OK:"}, "OK: ready", True, 1.0),
        ({"type": "is-json"}, '{"a": 1}', True, 1.0),
        ({"type": "is-json"}, 'x {"a": 1}', False, 0.0),
        ({"type": "is-json", "value": {"required": ["b"]}}, '{"a": 1}', False, 0.0),
        ({"type": "contains-json", "value": {"required": ["city"]}}, 'Sure: {"x": 1} and {"city": "P"}', True, 1.0),
        ({"type": "contains-json"}, "no json {here", False, 0.0),
        ({"type": "latency", "threshold": 100}, "x", False, 0.0),
        ({"type": "latency", "threshold": 500}, "x", True, 1.0),
        ({"type": "python", "value": "len(output) == 5"}, "Paris", True, 1.0),
        ({"type": "python", "value": "context['vars']['city'] in output"}, "Lisbon!", True, 1.0),
        ({"type": "python", "value": "0.4", "threshold": 0.5}, "x", False, 0.4),
        (
            {"type": "python", "value": "x = output.split()\nreturn {'pass': len(x) == 2, 'score': 0.7}"},
            "a b",
            True,
            0.7,
        ),
        ({"type": "python", "value": "1 / 0"}, "x", False, 0.0),
    ],
)
def test_assertion_scoring(kw: dict, output: str, passed: bool, score: float) -> None:
    o = evaluate(_a(**kw), output, CTX)
    assert (o.passed, round(o.score, 3)) == (passed, score), o.reason
    assert bool(o.reason) == (not passed)


def test_python_file_assertion(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("def grade(output, context):\n    return output.count('x') / 4\n")
    ctx = AssertContext({}, "", 1.0, 200, "r", None, str(tmp_path))
    o = evaluate(_a(type="python", value="file://a.py:grade", threshold=0.5), "xxx", ctx)
    assert o.passed and o.score == 0.75
    o = evaluate(_a(type="python", value="file://a.py"), "xxx", ctx)
    assert not o.passed and "get_assert" in o.reason


def test_test_score_weights_and_threshold() -> None:
    ok = evaluate(_a(type="contains", value="a", weight=3), "a", CTX)
    bad = evaluate(_a(type="contains", value="b", weight=1), "a", CTX)
    info = evaluate(_a(type="contains", value="z", weight=0), "a", CTX)
    s = score_test([ok, bad, info], None)
    assert not s.passed and s.score == 0.75 and "does not contain 'b'" in s.reason
    assert score_test([ok, bad, info], 0.7).passed
    assert score_test([ok, info], None).passed


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    vals = [float(v) for v in range(1, 21)]
    assert percentile(vals, 50) == 10.0 and percentile(vals, 95) == 19.0


def test_shipped_suites_parse_and_their_expected_answers_match_the_fixtures() -> None:
    for name in ("chat-bench", "vlm-bench", "audio-bench"):
        load_suite(EVALS / f"{name}.yaml")
    expected = json.loads((FIXTURES_DIR / "expected.json").read_text())
    vlm = yaml.safe_load((EVALS / "vlm-bench.yaml").read_text())
    asserted = json.dumps(vlm["tests"])
    bar = expected["bar-chart.png"]["answers"]
    for v in (bar["highest_month"], str(bar["highest_value"]), expected["code.png"]["answers"]["function"]):
        assert v in asserted
    topo = vlm["tests"][2]["assert"][0]["value"]["properties"]
    assert topo["hub"]["const"] == expected["topology.png"]["answers"]["hub"]
    assert sorted(topo["connected"]["items"]["enum"]) == sorted(expected["topology.png"]["answers"]["connected"])
    for name, meta in expected.items():
        assert (FIXTURES_DIR / name).stat().st_size == meta["bytes"]


def test_fixtures_regenerate_deterministically(tmp_path: Path) -> None:
    """Real Pillow and real espeak-ng: two generations agree byte for byte, and with the shipped copies."""
    first = generate_fixtures(tmp_path / "a")
    second = generate_fixtures(tmp_path / "b")
    assert first == second
    assert check_fixtures(tmp_path / "a") == []
    assert check_fixtures(FIXTURES_DIR) == []
    (tmp_path / "a" / "code.png").write_bytes(b"not the picture")
    assert any("code.png" in p for p in check_fixtures(tmp_path / "a"))
    import wave

    with wave.open(str(tmp_path / "a" / "long-60s.wav")) as w:
        assert w.getnframes() / w.getframerate() == 60.0
    with wave.open(str(tmp_path / "a" / "spoken.wav")) as w:
        assert 1.0 < w.getnframes() / w.getframerate() < 10.0


def test_cli_fixtures_check_and_list(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "forge_tui", "eval", "fixtures", "--check"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "agree" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "forge_tui", "eval", "list", "--db", str(tmp_path / "none.sqlite3")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "chat-bench" in out.stdout and "no stored runs" in out.stdout
