"""Audio routes: the 30 s cap read from the WAV header (413 before anything is forwarded), 400 for a
missing or unreadable audio part, and faithful multipart / JSON pass-through to the sidecar.

The core cases build their WAVs with the stdlib ``wave`` module (``forge_tui.smoke.tiny_wav``), so
they need nothing installed. Extra cross-checks use WAVs written by sox and espeak-ng (Debian): the
header duration against ``soxi``, sox's 31 s file refused the same way, a speech file forwarded
intact. The audio sidecar is a recording upstream: the test must see the exact bytes forwarded."""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from forge_tui.gateway.audio import AudioUnreadable, wav_duration
from forge_tui.smoke import tiny_wav
from forge_tui.telemetry import ErrorClass
from tests.support.gateway_harness import Harness, make_catalog, running_gateway
from tests.support.recording_upstream import RecordingUpstream

needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="sox (Debian) is not installed")


def _sox_tone(path: Path, seconds: float, rate: int = 16000) -> bytes:
    subprocess.run(
        ["sox", "-n", "-r", str(rate), "-c", "1", "-b", "16", str(path), "synth", str(seconds), "sine", "440"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path.read_bytes()


@pytest.fixture(scope="module")
def long_wav() -> bytes:
    """31 s of 16 kHz mono: one second over the cap."""
    return tiny_wav(31.0)


@pytest.fixture
async def sidecar() -> AsyncIterator[RecordingUpstream]:
    u = await RecordingUpstream("sidecar").start()
    yield u
    await u.stop()


@pytest.fixture
async def gw(sidecar: RecordingUpstream) -> AsyncIterator[Harness]:
    cat = make_catalog(
        backends={"audio": {"kind": "audio-sidecar", "base_url": sidecar.url}, "chat": {"base_url": sidecar.url}},
        models={
            "whisper-small": {"capabilities": ["audio"], "placements": [{"backend": "audio", "name": "whisper"}]},
            "qwen-omni": {"capabilities": ["audio", "chat"], "placements": [{"backend": "audio", "name": "omni"}]},
            "chatty": {"placements": [{"backend": "chat"}]},
        },
        roles={
            "transcribe": {"model": "whisper-small"},
            "audio-qa": {"model": "qwen-omni"},
            "default-chat": {"model": "chatty"},
        },
    )
    async with running_gateway(cat) as h:
        yield h


@needs_sox
def test_header_duration_matches_soxi(tmp_path: Path) -> None:
    for secs, rate in ((31, 16000), (2.5, 44100), (0.25, 8000)):
        p = tmp_path / f"t{secs}.wav"
        data = _sox_tone(p, secs, rate)
        soxi = float(subprocess.run(["soxi", "-D", str(p)], capture_output=True, text=True, check=True).stdout)
        assert wav_duration(data) == pytest.approx(soxi, abs=1e-3)
    # A WAV written to a pipe declares no real length; the bytes that are there count.
    raw = subprocess.run(
        "head -c 64000 /dev/zero | sox -t raw -r 16000 -e signed -b 16 -c 1 - -t wav - | cat",
        shell=True,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert wav_duration(raw) == pytest.approx(2.0, abs=1e-3)


def test_unreadable_audio() -> None:
    for junk in (b"", b"ID3\x03\x00 an mp3", b"RIFF\x00\x00\x00\x00WAVEdata\x00\x00\x00\x00"):
        with pytest.raises(AudioUnreadable):
            wav_duration(junk)


def test_header_duration_of_stdlib_wavs() -> None:
    for secs, rate in ((31.0, 16000), (2.5, 44100), (0.25, 8000)):
        assert wav_duration(tiny_wav(secs, rate)) == pytest.approx(secs, abs=1e-3)


async def test_31_second_wav_is_refused_before_forwarding(
    gw: Harness, sidecar: RecordingUpstream, long_wav: bytes
) -> None:
    wav = long_wav
    async with httpx.AsyncClient(base_url=gw.url) as c:
        r = await c.post(
            "/v1/audio_qa",
            data={"model": "audio-qa", "prompt": "what is this?"},
            files={"file": ("long.wav", wav, "audio/wav")},
        )
    assert r.status_code == 413
    err = r.json()["error"]
    assert "31.0 s long" in err["message"] and "at most 30 s" in err["message"]
    assert err["code"] == "payload_too_large"
    assert sidecar.requests == []
    rec = await gw.record(r.headers["x-forge-request-id"])
    assert rec.error_class is ErrorClass.PAYLOAD_TOO_LARGE and rec.role == "audio-qa" and rec.status == 413
    # Base64 in JSON is checked the same way, decoding only the header.
    async with httpx.AsyncClient(base_url=gw.url) as c:
        r = await c.post("/v1/audio_qa", json={"model": "audio-qa", "audio": base64.b64encode(wav).decode()})
    assert r.status_code == 413 and sidecar.requests == []


async def test_multipart_audio_and_image_are_forwarded_intact(gw: Harness, sidecar: RecordingUpstream) -> None:
    await _forwarded_intact(gw, sidecar, tiny_wav(2.0), "clip.wav")


@needs_sox
async def test_sox_made_31_second_wav_is_refused_too(gw: Harness, sidecar: RecordingUpstream, tmp_path) -> None:
    """Cross-check with a WAV from another writer (sox), in case its header differs from the stdlib's."""
    wav = _sox_tone(tmp_path / "long.wav", 31)
    async with httpx.AsyncClient(base_url=gw.url) as c:
        r = await c.post("/v1/audio_qa", data={"model": "audio-qa"}, files={"file": ("long.wav", wav, "audio/wav")})
    assert r.status_code == 413 and "31.0 s long" in r.json()["error"]["message"]
    assert sidecar.requests == []


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng (Debian) is not installed")
async def test_speech_wav_is_forwarded_intact(gw: Harness, sidecar: RecordingUpstream, tmp_path) -> None:
    """Cross-check with real speech written by espeak-ng."""
    p = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(p), "the forge gateway is listening"], check=True, timeout=60)
    await _forwarded_intact(gw, sidecar, p.read_bytes(), "speech.wav")


async def _forwarded_intact(gw: Harness, sidecar: RecordingUpstream, wav: bytes, name: str) -> None:
    png = b"\x89PNG\r\n\x1a\nfake-image-bytes"
    async with httpx.AsyncClient(base_url=gw.url) as c:
        r = await c.post(
            "/v1/audio_qa",
            data={"model": "audio-qa", "prompt": "who is speaking?"},
            files={"file": (name, wav, "audio/wav"), "image": ("x.png", png, "image/png")},
        )
    assert r.status_code == 200, r.text
    assert r.headers["x-forge-route"] == "role=audio-qa; model=qwen-omni; host=local; backend=audio"
    fwd = sidecar.requests[-1]
    assert fwd.path == "/v1/audio_qa"
    assert fwd.body["model"] == "omni" and fwd.body["prompt"] == "who is speaking?"
    assert fwd.body["file"] == wav and fwd.body["image"] == png
    assert fwd.body["_filenames"] == {"file": name, "image": "x.png"}
    assert (await gw.record(r.headers["x-forge-request-id"])).image is True


async def test_missing_or_unreadable_audio_is_400(gw: Harness, sidecar: RecordingUpstream) -> None:
    async with httpx.AsyncClient(base_url=gw.url) as c:
        r = await c.post(
            "/v1/audio_qa",
            data={"model": "audio-qa", "prompt": "hi"},
            files={"notes": ("n.txt", b"text", "text/plain")},
        )
        assert r.status_code == 400 and "Missing the audio part" in r.json()["error"]["message"]
        r = await c.post(
            "/v1/audio_qa",
            data={"model": "audio-qa"},
            files={"file": ("a.mp3", b"ID3\x03\x00\x00garbage", "audio/mpeg")},
        )
        assert r.status_code == 400 and "unreadable" in r.json()["error"]["message"]
        r = await c.post("/v1/audio_qa", json={"model": "audio-qa", "prompt": "hi"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "audio"
        r = await c.post("/v1/audio_qa", json={"model": "audio-qa", "audio": "%%% not base64 %%%"})
        assert r.status_code == 400 and "base64" in r.json()["error"]["message"]
    assert sidecar.requests == []
    assert all(r.error_class is ErrorClass.CALLER_ERROR for r in await gw.wait_records(4))


async def test_json_audio_qa_is_forwarded_with_the_backend_name(gw: Harness, sidecar: RecordingUpstream) -> None:
    b64 = base64.b64encode(tiny_wav(1.5)).decode()
    async with httpx.AsyncClient(base_url=gw.url) as c:
        r = await c.post("/v1/audio_qa", json={"audio": {"data": b64, "format": "wav"}, "prompt": "describe"})
    assert r.status_code == 200 and r.json()["text"]
    assert "role=audio-qa" in r.headers["x-forge-route"]  # no model: classified by the endpoint
    assert sidecar.bodies()[-1] == {"audio": {"data": b64, "format": "wav"}, "prompt": "describe", "model": "omni"}


async def test_transcriptions_pass_through(gw: Harness, sidecar: RecordingUpstream) -> None:
    wav = tiny_wav(0.5)
    raw = await gw.client().audio.transcriptions.with_raw_response.create(
        model="transcribe", file=("clip.wav", wav, "audio/wav"), language="en", response_format="json"
    )
    assert raw.parse().text == "hello from the recording upstream"
    assert raw.headers["x-forge-route"] == "role=transcribe; model=whisper-small; host=local; backend=audio"
    fwd = sidecar.requests[-1]
    assert fwd.path == "/v1/audio/transcriptions"
    assert fwd.body["model"] == "whisper" and fwd.body["file"] == wav and fwd.body["language"] == "en"


async def test_long_input_audio_in_chat_is_refused(gw: Harness, sidecar: RecordingUpstream, long_wav: bytes) -> None:
    wav = long_wav
    with pytest.raises(openai.APIStatusError) as ei:
        await gw.client().chat.completions.create(
            model="audio-qa",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "input_audio",
                            "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"},
                        }
                    ],
                }
            ],
        )
    assert ei.value.status_code == 413
    assert sidecar.requests == []


async def test_auto_routes_a_chat_with_input_audio_to_audio_qa(gw: Harness, sidecar: RecordingUpstream) -> None:
    b64 = base64.b64encode(tiny_wav(0.5)).decode()
    audio_msg = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what do you hear?"},
                {"type": "input_audio", "input_audio": {"data": b64, "format": "wav"}},
            ],
        }
    ]
    raw = await gw.client().chat.completions.with_raw_response.create(model="auto", messages=audio_msg)
    assert raw.headers["x-forge-route"].startswith("role=audio-qa; model=qwen-omni;")
    fwd = sidecar.requests[-1]
    assert fwd.path == "/v1/chat/completions" and fwd.body["model"] == "omni"
    assert fwd.body["messages"] == audio_msg  # the audio part travels untouched
    rec = await gw.record(raw.headers["x-forge-request-id"])
    assert rec.role == "audio-qa" and rec.model == "qwen-omni"
    # The same chat without the audio part is plain chat.
    raw = await gw.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": [{"type": "text", "text": "what do you hear?"}]}]
    )
    assert raw.headers["x-forge-route"].startswith("role=default-chat; model=chatty;")
