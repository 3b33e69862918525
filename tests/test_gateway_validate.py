"""Validation rules as functions (the HTTP corpus in test_gateway_badinput covers them through the route):
which field is reported when several are bad, and the per-model output cap."""

from __future__ import annotations

from typing import Any

import pytest

from forge_tui.gateway.errors import CallerError
from forge_tui.gateway.validate import check_chat, check_completions, check_model_limits

MSG = [{"role": "user", "content": "hi"}]


def _param(fn: Any, body: dict[str, Any]) -> str | None:
    with pytest.raises(CallerError) as info:
        fn(body)
    return info.value.param


def test_the_first_bad_field_in_the_callers_order_is_the_one_reported() -> None:
    assert _param(check_chat, {"temperature": 9, "messages": MSG, "top_p": 7}) == "temperature"
    assert _param(check_chat, {"top_p": 7, "messages": MSG, "temperature": 9}) == "top_p"
    # a bad field is reported before a missing required one, which is reported when all else is good
    assert _param(check_chat, {"model": "x", "n": 0}) == "n"
    assert _param(check_chat, {"model": "x", "max_tokens": 5}) == "messages"
    assert _param(check_completions, {"echo": "yes", "prompt": 3}) == "echo"
    assert _param(check_completions, {"best_of": 2}) == "prompt"


def test_rules_that_span_two_fields_hold_in_either_order() -> None:
    for body in (
        {"messages": MSG, "top_logprobs": 2, "logprobs": False},
        {"logprobs": False, "top_logprobs": 2, "messages": MSG},
    ):
        assert _param(check_chat, body) == "top_logprobs"
    check_chat({"top_logprobs": 2, "logprobs": True, "messages": MSG})
    for body in ({"tool_choice": "auto", "messages": MSG}, {"messages": MSG, "tool_choice": "required"}):
        assert _param(check_chat, body) == "tool_choice"
    assert _param(check_chat, {"stream_options": {"include_usage": True}, "messages": MSG}) == "stream_options"
    check_chat({"stream_options": {"include_usage": True}, "stream": True, "messages": MSG})
    # logprobs means a flag in chat and a count in completions
    assert _param(check_chat, {"logprobs": 3, "messages": MSG}) == "logprobs"
    check_completions({"logprobs": 3, "prompt": "p"})
    assert _param(check_completions, {"logprobs": 6, "prompt": "p"}) == "logprobs"


@pytest.mark.parametrize(
    "max_output,context,cap",
    [(512, 4096, 512), (8192, 4096, 4096), (None, 4096, 4096), (512, None, 512), (0, 300, 300), (None, None, None)],
)
def test_the_output_cap_is_the_smaller_limit_the_catalog_sets(
    max_output: int | None, context: int | None, cap: int | None
) -> None:
    big = 10**6
    if cap is None:
        check_model_limits({"max_tokens": big}, "m", max_output, context)
        return
    check_model_limits({"max_tokens": cap, "max_completion_tokens": cap}, "m", max_output, context)
    for f in ("max_tokens", "max_completion_tokens"):
        with pytest.raises(CallerError) as info:
            check_model_limits({f: cap + 1}, "m", max_output, context)
        assert info.value.param == f
        assert f"at most {cap} output tokens" in info.value.message
    check_model_limits({"max_tokens": True, "max_completion_tokens": None}, "m", max_output, context)
