"""Thinking policy: inject ``enable_thinking`` per family, and the ``<think>`` safety net.

Programmatic callers get ``chat_template_kwargs: {"enable_thinking": false}`` when the model's
family needs it; a caller opts in with that field set to true or with ``x-forge-thinking: on``.
When thinking is off and a model still opens its answer with ``<think>...</think>``, the block
is moved from ``content`` into ``reasoning_content`` (whole responses and streams alike).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config.models import ThinkingPolicy
from .errors import CallerError

__all__ = ["ThinkStripper", "ThinkingDecision", "decide", "strip_message"]

OPEN = "<think>"
CLOSE = "</think>"
_ON = frozenset({"on", "true", "1", "yes"})
_OFF = frozenset({"off", "false", "0", "no"})


@dataclass(frozen=True, slots=True)
class ThinkingDecision:
    inject: bool | None  # value to set for chat_template_kwargs.enable_thinking (None: leave the body alone)
    off: bool  # thinking is off for this request: the safety net strips a leaked block
    source: str  # "policy", "caller", "header" or "none" (for the record)
    label: str | None = None  # for the request record: who decided what, e.g. "policy:off"

    @property
    def injected_off(self) -> bool:
        return self.inject is False


# Every possible decision, built once: the request path only picks one.
NO_DECISION = ThinkingDecision(None, False, "none")
_CALLER_ON = ThinkingDecision(None, False, "caller", "caller:on")
_CALLER_OFF = ThinkingDecision(None, True, "caller", "caller:off")
_HEADER_ON = ThinkingDecision(True, False, "header", "header:on")
_HEADER_OFF = ThinkingDecision(False, True, "header", "header:off")
_POLICY_OFF = ThinkingDecision(False, True, "policy", "policy:off")
_NONE = ThinkingPolicy.NONE
_OFF_BY_DEFAULT = ThinkingPolicy.OFF_BY_DEFAULT


def caller_choice(body: dict[str, Any]) -> bool | None:
    """The caller's own ``chat_template_kwargs.enable_thinking`` (None when not given)."""
    ctk = body.get("chat_template_kwargs")
    if ctk is None:
        return None
    if not isinstance(ctk, dict):
        raise CallerError("chat_template_kwargs must be an object", param="chat_template_kwargs")
    v = ctk.get("enable_thinking")
    if v is None:
        return None
    if not isinstance(v, bool):
        raise CallerError(
            "chat_template_kwargs.enable_thinking must be a boolean", param="chat_template_kwargs.enable_thinking"
        )
    return v


def decide(policy: ThinkingPolicy, caller: bool | None, header: str | None) -> ThinkingDecision:
    if caller is not None:
        return _CALLER_ON if caller else _CALLER_OFF
    if policy is _NONE:
        return NO_DECISION  # the family's template knows no such switch
    if header:
        h = header.strip().lower()
        if h in _ON:
            return _HEADER_ON
        if h in _OFF:
            return _HEADER_OFF
    if policy is _OFF_BY_DEFAULT:
        return _POLICY_OFF
    return NO_DECISION


def apply(body: dict[str, Any], decision: ThinkingDecision) -> dict[str, Any]:
    """A shallow copy of ``body`` with the decision applied (the caller's dict is left as it was)."""
    if decision.inject is None:
        return body
    out = dict(body)
    ctk = dict(body.get("chat_template_kwargs") or {})
    ctk["enable_thinking"] = decision.inject
    out["chat_template_kwargs"] = ctk
    return out


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


class ThinkStripper:
    """Stream-safe: feed content deltas, get (content, reasoning) back; tags may split across chunks."""

    __slots__ = ("buf", "leaked", "state")

    START, INSIDE, AFTER, PASS = 0, 1, 2, 3  # AFTER: drop the blank lines that follow </think>

    def __init__(self) -> None:
        self.state = self.START
        self.buf = ""
        self.leaked = False

    @property
    def passthrough(self) -> bool:
        return self.state == self.PASS and not self.buf

    def feed(self, text: str) -> tuple[str, str]:
        if self.state == self.PASS:
            return text, ""
        if self.state == self.AFTER:
            text = text.lstrip()
            if text:
                self.state = self.PASS
            return text, ""
        self.buf += text
        if self.state == self.START:
            s = self.buf.lstrip()
            if not s or (len(s) < len(OPEN) and OPEN.startswith(s)):
                return "", ""  # could still become "<think>": hold it
            if not s.startswith(OPEN):
                out, self.buf, self.state = self.buf, "", self.PASS
                return out, ""
            self.leaked = True
            self.state = self.INSIDE
            self.buf = s[len(OPEN) :]
        # INSIDE the block
        idx = self.buf.find(CLOSE)
        if idx >= 0:
            reasoning = self.buf[:idx]
            rest = self.buf[idx + len(CLOSE) :].lstrip()
            self.buf = ""
            self.state = self.PASS if rest else self.AFTER
            return rest, reasoning
        keep = _partial_suffix(self.buf, CLOSE)
        reasoning = self.buf[: len(self.buf) - keep]
        self.buf = self.buf[len(self.buf) - keep :]
        return "", reasoning

    def finish(self) -> tuple[str, str]:
        """End of output: release whatever was held (an unterminated block stays reasoning)."""
        buf, self.buf = self.buf, ""
        if self.state == self.INSIDE:
            self.state = self.PASS
            return "", buf
        self.state = self.PASS
        return buf, ""


def strip_message(message: dict[str, Any]) -> bool:
    """Move a leading think block of a whole ``message`` into ``reasoning_content``; True if one was there."""
    content = message.get("content")
    if not isinstance(content, str) or not content.lstrip().startswith(OPEN):
        return False
    st = ThinkStripper()
    c1, r1 = st.feed(content)
    c2, r2 = st.finish()
    if not st.leaked:
        return False
    reasoning = r1 + r2
    prior = message.get("reasoning_content")
    message["reasoning_content"] = (prior + "\n" if isinstance(prior, str) and prior else "") + reasoning.strip()
    message["content"] = c1 + c2
    return True
