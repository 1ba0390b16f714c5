"""easel's POST /v1/images/generations, driven by the official OpenAI Python client.

Usage: python openai_images.py BASE_URL API_KEY

BASE_URL is the server's root (http://127.0.0.1:PORT); API_KEY one of its EASEL_API_KEYS.
Run by tests/clients.rs against a server with the default model (shapes); every job is 2 steps at 64x64 or
128x64, so the whole run takes seconds. Prints a line per check; exits non-zero on the first
failure. Needs only the standard library and `openai` (PNGs are checked by hand, no Pillow).
"""

import base64
import struct
import sys
import time
import urllib.request
import zlib

import openai
from openai import OpenAI

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Bits per pixel's channel count, by PNG colour type.
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
FAST = {"steps": 2}


class CheckFailed(Exception):
    pass


def check(cond, message):
    if not cond:
        raise CheckFailed(message)


def parse_png(data, what):
    """Checks `data` is a well-formed PNG; returns (width, height, pixel bytes, text chunks)."""
    check(isinstance(data, (bytes, bytearray)), f"{what}: not bytes")
    check(data[:8] == PNG_SIGNATURE, f"{what}: no PNG signature; starts with {bytes(data[:16])!r}")
    pos, chunks = 8, []
    while pos < len(data):
        check(pos + 12 <= len(data), f"{what}: truncated chunk header at byte {pos}")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = bytes(data[pos + 4 : pos + 8])
        body = bytes(data[pos + 8 : pos + 8 + length])
        check(len(body) == length and pos + 12 + length <= len(data), f"{what}: truncated {kind!r} chunk")
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        check(zlib.crc32(kind + body) == crc, f"{what}: bad CRC in the {kind!r} chunk")
        chunks.append((kind, body))
        pos += 12 + length
        if kind == b"IEND":
            break
    check(chunks and chunks[0][0] == b"IHDR", f"{what}: the first chunk is not IHDR")
    check(chunks[-1][0] == b"IEND", f"{what}: no IEND chunk")
    ihdr = chunks[0][1]
    check(len(ihdr) == 13, f"{what}: IHDR is {len(ihdr)} bytes, not 13")
    width, height, depth, color, _comp, _filter, interlace = struct.unpack(">IIBBBBB", ihdr)
    check(color in PNG_CHANNELS, f"{what}: unknown colour type {color}")
    idat = b"".join(body for kind, body in chunks if kind == b"IDAT")
    check(idat, f"{what}: no IDAT chunk")
    try:
        pixels = zlib.decompress(idat)
    except zlib.error as e:
        raise CheckFailed(f"{what}: the image data does not inflate: {e}")
    if interlace == 0:
        row = (width * PNG_CHANNELS[color] * depth + 7) // 8
        check(
            len(pixels) == height * (1 + row),
            f"{what}: {len(pixels)} bytes of pixel data, expected {height * (1 + row)} for {width}x{height}",
        )
    texts = {}
    for kind, body in chunks:
        if kind == b"tEXt":
            key, _, text = body.partition(b"\0")
            texts[key.decode("latin-1")] = text.decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            compressed, rest = rest[0], rest[2:]
            _lang, _, rest = rest.partition(b"\0")
            _translated, _, text = rest.partition(b"\0")
            texts[key.decode("latin-1")] = (zlib.decompress(text) if compressed else text).decode("utf-8")
    return width, height, pixels, texts


def settings(texts, what):
    """The A1111 settings line of the PNG's `parameters` chunk as a dict (Seed, Size, Model…)."""
    params = texts.get("parameters")
    check(params, f"{what}: no `parameters` text chunk (has {sorted(texts)})")
    last = params.rsplit("\n", 1)[-1]
    return dict(part.split(": ", 1) for part in last.split(", ") if ": " in part)


def fetch(url, what):
    with urllib.request.urlopen(url, timeout=30) as r:
        check(r.status == 200, f"{what}: GET {url} answered {r.status}")
        ctype = r.headers.get("content-type", "")
        check(ctype.startswith("image/png"), f"{what}: GET {url} has content-type {ctype!r}")
        return r.read()


def check_response(resp, n, what, prompt):
    check(isinstance(resp.created, int), f"{what}: `created` is {resp.created!r}, not an integer")
    check(abs(resp.created - time.time()) < 600, f"{what}: `created` {resp.created} is not about now")
    check(resp.data is not None and len(resp.data) == n, f"{what}: expected {n} images, got {resp.data!r}")
    for i, item in enumerate(resp.data):
        check(
            item.revised_prompt == prompt,
            f"{what}: image {i} has revised_prompt {item.revised_prompt!r}, expected {prompt!r}",
        )


def expect_error(cls, status, code, what, call):
    try:
        resp = call()
    except cls as e:
        check(e.status_code == status, f"{what}: status {e.status_code}, expected {status}; body {e.body!r}")
        body = e.body if isinstance(e.body, dict) else {}
        if code is not None:
            check(
                e.code == code and body.get("code") == code,
                f"{what}: code {e.code!r} (body {e.body!r}), expected {code!r}",
            )
        check(isinstance(body.get("message"), str) and body["message"], f"{what}: no error message in {e.body!r}")
        check(isinstance(body.get("type"), str), f"{what}: no error type in {e.body!r}")
        return e
    except openai.APIStatusError as e:
        raise CheckFailed(
            f"{what}: expected {cls.__name__} ({status}), got {type(e).__name__} "
            f"({e.status_code}): {e.body!r}"
        )
    raise CheckFailed(f"{what}: expected {cls.__name__} ({status}), but it succeeded: {resp!r}")


def main(base, key):
    base = base.rstrip("/")
    client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=120)
    ok = lambda msg: print(f"ok: {msg}", flush=True)  # noqa: E731

    # 1. Two images as base64, seeds 7 and 8, in order.
    what = "b64_json, n=2, 64x64"
    prompt = "a red circle"
    resp = client.images.generate(
        prompt=prompt, model="shapes", n=2, size="64x64", response_format="b64_json",
        extra_body={**FAST, "seed": 7},
    )
    check_response(resp, 2, what, prompt)
    decoded = []
    for i, item in enumerate(resp.data):
        check(item.url is None, f"{what}: image {i} has a url as well: {item.url!r}")
        check(isinstance(item.b64_json, str) and item.b64_json, f"{what}: image {i} has no b64_json")
        png = base64.b64decode(item.b64_json, validate=True)
        w, h, pixels, texts = parse_png(png, f"{what}, image {i}")
        check((w, h) == (64, 64), f"{what}: image {i} is {w}x{h}, expected 64x64")
        s = settings(texts, f"{what}, image {i}")
        check(s.get("Seed") == str(7 + i), f"{what}: image {i} has seed {s.get('Seed')!r}, expected {7 + i}")
        check(s.get("Model") == "shapes", f"{what}: image {i} is from model {s.get('Model')!r}, expected shapes")
        check(s.get("Steps") == "2", f"{what}: image {i} ran {s.get('Steps')!r} steps, expected 2")
        decoded.append(pixels)
    check(decoded[0] != decoded[1], f"{what}: the two images have the same pixels")
    ok(f"{what}: two valid 64x64 PNGs, seeds 7 and 8, different pixels")

    # 2. One image by URL, 128x64.
    what = "url, n=1, 128x64"
    resp = client.images.generate(
        prompt=prompt, model="shapes", n=1, size="128x64", response_format="url",
        extra_body={**FAST, "seed": 7},
    )
    check_response(resp, 1, what, prompt)
    url = resp.data[0].url
    check(resp.data[0].b64_json is None, f"{what}: the image has b64_json as well")
    check(isinstance(url, str) and url.startswith(base + "/"), f"{what}: url {url!r} does not start with {base}/")
    w, h, _, texts = parse_png(fetch(url, what), what)
    check((w, h) == (128, 64), f"{what}: the image is {w}x{h}, expected 128x64")
    check(settings(texts, what).get("Size") == "128x64", f"{what}: parameters say {texts.get('parameters')!r}")
    ok(f"{what}: {url} is a 128x64 PNG")

    # 3. OpenAI's model names mean the server's default model (shapes here).
    what = "model=dall-e-2"
    resp = client.images.generate(
        prompt="a blue square", model="dall-e-2", size="64x64", response_format="url", extra_body=FAST,
    )
    check_response(resp, 1, what, "a blue square")
    w, h, _, texts = parse_png(fetch(resp.data[0].url, what), what)
    check((w, h) == (64, 64), f"{what}: the image is {w}x{h}, expected 64x64")
    model = settings(texts, what).get("Model")
    check(model == "shapes", f"{what}: painted by {model!r}, expected the default model shapes")
    ok(f"{what}: painted by the default model ({model})")

    # 4. Refusals, in OpenAI's error shape.
    for what, code, args in [
        ("empty prompt", "invalid_prompt", dict(prompt="", size="64x64")),
        ("size=3x3", "invalid_params", dict(prompt=prompt, size="3x3")),
        ("n=5", None, dict(prompt=prompt, n=5, size="64x64")),
    ]:
        e = expect_error(
            openai.BadRequestError, 400, code, what,
            lambda: client.images.generate(model="shapes", extra_body=FAST, **args),
        )
        ok(f"{what}: 400 {e.code} ({e.body.get('message')!r})")

    what = "wrong API key"
    wrong = OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0, timeout=120)
    e = expect_error(
        openai.AuthenticationError, 401, "invalid_api_key", what,
        lambda: wrong.images.generate(prompt=prompt, model="shapes", size="64x64", extra_body=FAST),
    )
    ok(f"{what}: 401 {e.code} ({e.body.get('message')!r})")

    # 5. Idempotency-Key: a retry answers the same images; another body under the key is a 422.
    what = "Idempotency-Key"
    args = dict(
        prompt="a green triangle", model="shapes", n=2, size="64x64", response_format="url",
        extra_body={**FAST, "seed": 11},
    )
    first = client.images.generate(**args, extra_headers={"Idempotency-Key": "py-1"})
    check_response(first, 2, what, "a green triangle")
    again = client.images.generate(**args, extra_headers={"Idempotency-Key": "py-1"})
    check_response(again, 2, what, "a green triangle")
    urls = [d.url for d in first.data]
    check(len(set(urls)) == 2, f"{what}: the two images share a URL: {urls}")
    check([d.url for d in again.data] == urls, f"{what}: the retry answered {[d.url for d in again.data]}, not {urls}")
    other = {**args, "prompt": "a yellow star"}
    e = expect_error(
        openai.UnprocessableEntityError, 422, "idempotency_mismatch", what + " with another prompt",
        lambda: client.images.generate(**other, extra_headers={"Idempotency-Key": "py-1"}),
    )
    ok(f"{what}: the retry answered the same images ({', '.join(urls)}); another prompt: 422 {e.code}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python openai_images.py BASE_URL API_KEY")
    print(f"openai {openai.__version__} against {sys.argv[1]}", flush=True)
    started = time.monotonic()
    try:
        main(sys.argv[1], sys.argv[2])
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except openai.APIStatusError as e:
        req = e.response.request
        try:
            sent = req.content.decode("utf-8", "replace")
        except Exception:  # a streamed body cannot be read back
            sent = "?"
        print(
            f"FAILED: {req.method} {req.url} {sent} answered {e.status_code} "
            f"({type(e).__name__}): {e.response.text}",
            file=sys.stderr, flush=True,
        )
        sys.exit(1)
    except openai.APIError as e:
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"all OpenAI client checks passed in {time.monotonic() - started:.1f}s", flush=True)
