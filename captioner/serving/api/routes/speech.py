"""``POST /v1/speech``: a text (a caption) spoken aloud in its language's voice."""
from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ... import speech as voices
from ..errors import APIError
from ..schemas import SpeechRequest, errors

router = APIRouter(prefix="/v1", tags=["speech"])


@router.post("/speech", summary="Speak a text (a caption) aloud", response_class=Response,
             responses={200: {"content": {"audio/mpeg": {}, "audio/wav": {}},
                              "description": "the audio; X-Speech-Engine says which voice was used"},
                        **errors(422, 503)})
async def speech(request: Request, body: SpeechRequest, lang: str | None = Query(None, description="the voice's language, "
                                                                                  "as in /v1/captions?lang= "
                                                                                  "(overrides the body's lang)")
                 ) -> Response:
    """The audio of ``body.text`` (MP3 from gTTS, or WAV from the offline espeak-ng voice), spoken on the
    speech pool's own threads (503 at once when they are all busy) so a hanging voice never delays captions."""
    if lang is not None:
        body.lang = lang.strip().lower()
    if body.lang not in voices.LANGUAGES:
        raise APIError(422, f"unknown language {body.lang!r} (choose from {', '.join(voices.LANGUAGES)})")
    if body.engine not in voices.ENGINES:
        raise APIError(422, f"unknown speech engine {body.engine!r} (choose from {', '.join(voices.ENGINES)})")
    try:  # voices.speak is looked up per call (tests replace it)
        spoken = await request.app.state.speech_pool.run(voices.speak, body.text, body.lang, body.engine)
    except voices.NothingToSay as err:  # the request's own fault, not a voice failing
        raise APIError(422, str(err)) from err
    except voices.SpeechError as err:
        raise APIError(503, f"no voice could speak the text: {err}") from err
    headers = {"X-Speech-Engine": _header(spoken.engine)}
    if spoken.notes:
        headers["X-Speech-Notes"] = _header("; ".join(spoken.notes))
    return Response(spoken.audio, media_type=spoken.mime, headers=headers)


def _header(text: str) -> str:
    """HTTP header values are latin-1: keep them plain ASCII."""
    return text.encode("ascii", "replace").decode("ascii")
