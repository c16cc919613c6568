"""`GET /v1/voices`, `POST /v1/voices` (multipart sample upload -> a cloned voice), `DELETE /v1/voices/{name}`.

Names from the network are names only (`voices.voice.check_name`: letters, digits,
`_ . -`, no separators, no leading dot): a name never reaches the filesystem
except as `<store>/<name>.safetensors`. A sample goes through `engine.voices.add`,
which decodes and checks the audio (length, silence, clipping) before encoding it.
"""
from __future__ import annotations

import asyncio
import io

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import VoiceError
from ..voices.voice import check_name
from .errors import ApiError


def _server(request: Request):
    return request.app.state.cadenza


def _name(value) -> str:
    try:
        return check_name(value)
    except VoiceError as e:
        raise ApiError(400, str(e), "invalid_voice_name", "name") from None


def _models(srv, model: str | None) -> dict:
    """name -> engine: the one asked for, or every loaded model."""
    if model:
        return {model: srv.models.get(model)}
    return dict(srv.models.engines)


async def list_voices(request: Request) -> JSONResponse:
    """Built-in voices, `default`, and the stored voices made with each model's bundle."""
    srv = _server(request)
    data = []
    for model, engine in _models(srv, request.query_params.get("model")).items():
        data.append({"id": "default", "object": "voice", "model": model, "kind": "default"})
        data += [{"id": v, "object": "voice", "model": model, "kind": "builtin"} for v in engine.voices.builtin]
        for v in await asyncio.to_thread(engine.voices.list):
            if "error" in v or v.get("bundle_hash") != engine.bundle.hash:
                continue  # unreadable, or made with another bundle: unusable with this model
            data.append({"id": v["name"], "object": "voice", "model": model, "kind": "stored",
                         "duration_s": v["duration_s"], "created": v["created"], "prompt": v["prompt"]})
    return JSONResponse({"object": "list", "data": data})


def _flag(form, key: str) -> bool:
    v = str(form.get(key, "false")).strip().lower()
    if v not in ("true", "false", "1", "0", ""):
        raise ApiError(400, f"{key} must be true or false, got {v!r}", "invalid_parameter", key)
    return v in ("true", "1")


async def add_voice(request: Request) -> JSONResponse:
    """multipart/form-data: `model`, `name`, `sample` (the audio file), optional `transcript`,
    `with_prompt`, `replace`. 201 with the voice; 400 bad sample or name; 409 name taken."""
    srv = _server(request)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, "POST /v1/voices takes multipart/form-data with model, name and sample (a file)",
                       "invalid_content_type")
    async with request.form(max_files=1, max_fields=8) as form:
        engine = srv.models.get(form.get("model"))
        name = _name(form.get("name"))
        sample = form.get("sample") or form.get("file")
        if sample is None or isinstance(sample, str):
            raise ApiError(400, "the audio sample must be a file field named sample", "missing_sample", "sample")
        data = await sample.read()
        transcript = form.get("transcript") or None
        with_prompt, replace = _flag(form, "with_prompt"), _flag(form, "replace")
    try:
        voice = await asyncio.to_thread(engine.voices.add, io.BytesIO(data), name, with_prompt, transcript,
                                        replace=replace)
    except VoiceError as e:
        taken = "already exists" in str(e)
        raise ApiError(409 if taken else 400, str(e), "voice_exists" if taken else "invalid_sample",
                       "name" if taken else "sample") from None
    return JSONResponse({"id": voice.name, "object": "voice", "model": form.get("model"), "kind": "stored",
                         "duration_s": voice.duration, "prompt": voice.prompt_codes is not None}, status_code=201)


async def delete_voice(request: Request) -> JSONResponse:
    """Remove a stored voice from the stores of the models asked for (all by default); 404 if none had it."""
    srv = _server(request)
    name = _name(request.path_params["name"])
    removed = False
    stores = {}
    for engine in _models(srv, request.query_params.get("model")).values():
        stores.setdefault(str(engine.voices.store.directory), engine)
    for engine in stores.values():
        try:
            await asyncio.to_thread(engine.voices.remove, name)
            removed = True
        except VoiceError:
            continue
    if not removed:
        raise ApiError(404, f"no stored voice named {name!r}", "voice_not_found", "name")
    return JSONResponse({"id": name, "object": "voice", "deleted": True})


__all__ = ["list_voices", "add_voice", "delete_voice"]
