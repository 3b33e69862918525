"""Route resolution through the real gateway: role names, model ids, auto classification, 404s,
deprecation headers, /v1/models, and a role change taking effect on the next request.

The upstreams are recording upstreams (tests/support/recording_upstream.py) because these tests
must see the exact body the gateway forwarded (the backend's own model name)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from forge_tui.smoke import tiny_png, tiny_wav
from forge_tui.telemetry import ErrorClass
from tests.support.gateway_harness import Harness, make_catalog, running_gateway
from tests.support.recording_upstream import RecordingUpstream

MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def ups() -> AsyncIterator[dict[str, RecordingUpstream]]:
    started = {n: await RecordingUpstream(n).start() for n in ("a", "b", "vis", "emb")}
    yield started
    for u in started.values():
        await u.stop()


def _catalog(ups: dict[str, RecordingUpstream]):
    return make_catalog(
        backends={n: {"base_url": u.url} for n, u in ups.items()},
        models={
            "new-chat": {"family": "thinker", "placements": [{"backend": "a", "name": "gemma-4-31b-q4"}]},
            "old-chat": {
                "deprecated": True,
                "sunset": "2030-06-01",
                "placements": [{"backend": "b", "name": "qwen3-35b"}],
            },
            "vis-model": {"capabilities": ["chat", "vision"], "placements": [{"backend": "vis"}]},
            "emb-model": {"capabilities": ["embed"], "placements": [{"backend": "emb"}]},
            "off-model": {"state": "disabled", "placements": [{"backend": "b"}]},
        },
        roles={
            "default-chat": {"model": "new-chat", "previous": "old-chat", "fallbacks": ["old-chat"]},
            "priority-chat": {"model": "old-chat"},
            "vision": {"model": "vis-model"},
            "embed": {"model": "emb-model"},
        },
    )


@pytest.fixture
async def gw(ups: dict[str, RecordingUpstream], tmp_path) -> AsyncIterator[Harness]:
    async with running_gateway(_catalog(ups), state_dir=tmp_path / "state") as h:
        yield h


async def test_role_name_routes_to_the_role_model_with_the_backend_name(gw: Harness, ups) -> None:
    raw = await gw.client().chat.completions.with_raw_response.create(model="default-chat", messages=MSG)
    assert raw.headers["x-forge-route"] == "role=default-chat; model=new-chat; host=local; backend=a"
    rid = raw.headers["x-forge-request-id"]
    assert rid
    assert raw.parse().choices[0].message.content == "hello from the recording upstream"
    assert [b["model"] for b in ups["a"].bodies()] == ["gemma-4-31b-q4"]
    assert ups["b"].requests == []
    rec = await gw.record(rid)
    assert (rec.role, rec.model, rec.host, rec.backend, rec.status) == ("default-chat", "new-chat", "local", "a", 200)
    assert rec.error_class is ErrorClass.OK
    assert (rec.tokens_in, rec.tokens_out, rec.tokens_per_s) == (7, 5, 123.0)
    assert rec.fallback is False


async def test_model_id_routes_directly_and_deprecated_models_carry_headers(gw: Harness, ups) -> None:
    raw = await gw.client().chat.completions.with_raw_response.create(model="old-chat", messages=MSG)
    assert raw.headers["x-forge-route"] == "role=-; model=old-chat; host=local; backend=b"
    assert raw.headers["Sunset"] == "Sat, 01 Jun 2030 00:00:00 GMT"
    dep = raw.headers["Deprecation"]
    assert dep.startswith("@") and int(dep[1:]) > 1_600_000_000
    assert ups["b"].bodies()[0]["model"] == "qwen3-35b"
    # A current model carries neither header.
    raw2 = await gw.client().chat.completions.with_raw_response.create(model="new-chat", messages=MSG)
    assert "Deprecation" not in raw2.headers and "Sunset" not in raw2.headers


async def test_auto_classifies_images_audio_and_embeddings(gw: Harness, ups) -> None:
    c = gw.client()
    png = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
    raw = await c.chat.completions.with_raw_response.create(
        model="auto",
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": png}}],
            }
        ],
    )
    assert "role=vision; model=vis-model" in raw.headers["x-forge-route"]
    assert (await gw.record(raw.headers["x-forge-request-id"])).image is True
    # Audio input, but no audio-qa role defined: chat-like content falls back to default-chat.
    wav = base64.b64encode(tiny_wav(0.5)).decode()
    raw = await c.chat.completions.with_raw_response.create(
        model="auto",
        messages=[
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}]}
        ],
    )
    assert raw.headers["x-forge-route"].startswith("role=default-chat;")
    emb = await c.embeddings.with_raw_response.create(model="auto", input=["a", "b"])
    assert emb.headers["x-forge-route"] == "role=embed; model=emb-model; host=local; backend=emb"
    assert len(emb.parse().data) == 2
    # No model at all (the SDK always sends one, so plain HTTP here).
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/v1/chat/completions", json={"messages": MSG}) as r:
            assert r.status == 200
            assert r.headers["x-forge-route"].startswith("role=default-chat; model=new-chat")
        async with s.post(gw.url + "/v1/completions", json={"prompt": "once upon"}) as r:
            assert r.status == 200
            assert r.headers["x-forge-route"].startswith("role=default-chat;")
    assert ups["a"].bodies("/v1/completions")[0]["model"] == "gemma-4-31b-q4"


async def test_unknown_role_is_404_listing_roles(gw: Harness) -> None:
    with pytest.raises(openai.NotFoundError) as ei:
        await gw.client().chat.completions.create(model="defualt-chat", messages=MSG)
    err = ei.value
    assert err.body["code"] == "model_not_found" and err.body["param"] == "model"
    msg = err.body["message"]
    assert "'defualt-chat'" in msg
    for role in ("default-chat", "priority-chat", "vision", "embed"):
        assert role in msg
    assert err.response.headers["x-forge-request-id"]
    rec = await gw.record(err.response.headers["x-forge-request-id"])
    assert rec.status == 404 and rec.error_class is ErrorClass.NOT_FOUND


async def test_disabled_model_is_never_routed(gw: Harness, ups) -> None:
    with pytest.raises(openai.NotFoundError) as ei:
        await gw.client().chat.completions.create(model="off-model", messages=MSG)
    assert "disabled" in ei.value.body["message"]
    assert ups["b"].requests == []


async def test_embed_role_missing_means_404_for_auto_embeddings(ups, tmp_path) -> None:
    cat = make_catalog(
        backends={"a": {"base_url": ups["a"].url}},
        models={"m": {"placements": [{"backend": "a"}]}},
        roles={"default-chat": {"model": "m"}},
    )
    async with running_gateway(cat) as h:
        with pytest.raises(openai.NotFoundError) as ei:
            await h.client().embeddings.create(model="auto", input="x")
        assert "'embed'" in ei.value.body["message"]


async def test_models_list_has_roles_and_models_with_state(gw: Harness) -> None:
    page = await gw.client().models.list()
    by_id = {m.id: m.model_dump() for m in page.data}
    role = by_id["default-chat"]["forge"]
    assert role["kind"] == "role" and role["target"] == "new-chat" and role["fallbacks"] == ["old-chat"]
    old = by_id["old-chat"]["forge"]
    assert old["kind"] == "model" and old["deprecated"] is True and old["sunset"] == "2030-06-01"
    assert old["roles"] == ["priority-chat"]
    assert by_id["new-chat"]["forge"]["thinking"] == "off-by-default"
    assert by_id["off-model"]["forge"]["state"] == "disabled"
    assert all(m["object"] == "model" for m in by_id.values())


async def test_role_change_routes_the_next_request_anew_and_is_audited(gw: Harness, ups, tmp_path) -> None:
    c = gw.client()
    first = await c.chat.completions.with_raw_response.create(model="default-chat", messages=MSG)
    assert "model=new-chat" in first.headers["x-forge-route"]

    gw.state.swap_role("default-chat", "old-chat", actor="test-operator")
    second = await c.chat.completions.with_raw_response.create(model="default-chat", messages=MSG)
    assert second.headers["x-forge-route"] == "role=default-chat; model=old-chat; host=local; backend=b"
    assert ups["b"].bodies()[-1]["model"] == "qwen3-35b"
    # The overlay and the audit log are on disk; the catalog object is untouched.
    state_file = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state_file["roles"]["default-chat"]["model"] == "old-chat"
    audit = [json.loads(line) for line in (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["action"] == "swap" and audit[-1]["actor"] == "test-operator"
    assert audit[-1]["before"]["model"] == "new-chat" and audit[-1]["after"]["model"] == "old-chat"

    gw.state.rollback_role("default-chat", actor="test-operator")
    third = await c.chat.completions.with_raw_response.create(model="default-chat", messages=MSG)
    assert "model=new-chat" in third.headers["x-forge-route"]


async def test_caller_request_id_is_kept(gw: Harness) -> None:
    raw = await gw.client().chat.completions.with_raw_response.create(
        model="default-chat", messages=MSG, extra_headers={"x-request-id": "trace-abc-123"}
    )
    assert raw.headers["x-forge-request-id"] == "trace-abc-123"
    assert (await gw.record("trace-abc-123")).role == "default-chat"
