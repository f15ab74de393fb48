"""The HTTP API over a real server (uvicorn subprocess on 127.0.0.1) with the shipped model:
routes, the same bytes for the same seed, bad input as one-line 4xx, the upload limit
(Content-Length and chunked), /healthz during a large /generate, metrics, and schemathesis
over the OpenAPI schema. One server for the whole module."""

from __future__ import annotations

import base64
import io
import re
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from tests.helpers import (
    assert_one_line,
    bundled_members,
    declared_png,
    image_bytes,
    schemathesis_calls,
)
from vae_cats.checkpoint import read_checkpoint, vae_from_checkpoint
from vae_cats.data.decode import decode_image
from vae_cats.fileio import ASSETS_DIR
from vae_cats.generate import latent_codes
from vae_cats.images import to_uint8
from vae_cats.packager import DEFAULT_SAMPLER
from vae_cats.samplers import LEARNED_SAMPLERS
from vae_cats.serving.app import create_app
from vae_cats.serving.image import main as image_entry
from vae_cats.serving.launch import running_server
from vae_cats.serving.settings import Settings

SHIPPED = ASSETS_DIR / "cats_vae.ckpt"
LATENT_DIM = read_checkpoint(SHIPPED)["net_config"]["latent_dim"]
LIMIT = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    # A 5-ms batch wait makes the concurrent requests of the batching test share calls
    # even on a machine fast enough to decode each before the next arrives.
    with running_server(SHIPPED, "onnx", options=["--batch-wait-ms", "5"]) as (base, _):
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=120) as session:
        yield session


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def face() -> bytes:
    return bundled_members(1)[0][1]


def test_health_ready_and_model_card(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    card = client.get("/model").json()
    assert (
        card["backend"] == "onnx" and card["latent_dim"] == LATENT_DIM and card["image_size"] == 64
    )
    # The shipped model stores every learned sampler and names the packager's default.
    assert card["samplers"] == ["normal", *LEARNED_SAMPLERS]
    assert card["default_sampler"] == DEFAULT_SAMPLER
    assert card["path"] == "vae_cats/assets/cats_vae.ckpt"  # for the page's predict command
    # The commit the model was trained at, "-dirty" when the tree had uncommitted edits.
    assert (
        re.fullmatch(r"[0-9a-f]{40}(-dirty)?", card["git_commit"]) and len(card["data_hash"]) == 64
    )
    assert card["config"]["model"]["latent_dim"] == LATENT_DIM
    assert 0.5 < card["metrics"]["ssim"] < 1 and card["metrics"]["psnr"] > 15
    assert card["drift"]["false_alarm_rate"] == 0.01 and card["drift"]["threshold"] > 0
    directions = card["latent_directions"]
    components = np.array(directions["components"])
    assert components.shape == (8, LATENT_DIM) and len(directions["std"]) == 8
    assert np.allclose(np.linalg.norm(components, axis=1), 1, atol=1e-4)


@pytest.mark.parametrize("sampler", list(LEARNED_SAMPLERS))
def test_generate_draws_each_stored_sampler_as_predict_does(
    client: httpx.Client, sampler: str
) -> None:
    """Every learned sampler the model stores answers with the codes predict draws for the
    same seed, named in ``X-Sampler``."""
    response = client.post(
        "/generate", json={"n": 3, "seed": 5, "sampler": sampler, "format": "json"}
    )
    assert response.status_code == 200 and response.headers["x-sampler"] == sampler
    checkpoint = read_checkpoint(SHIPPED)
    z, _ = latent_codes(sampler, vae_from_checkpoint(checkpoint, SHIPPED), checkpoint, 3, 5)
    assert np.allclose(np.array(response.json()["latents"]), z.numpy(), atol=1e-6)


def test_generate_same_seed_same_bytes_and_predict_codes(client: httpx.Client) -> None:
    first = client.post("/generate", json={"n": 4, "seed": 7})
    second = client.post("/generate", json={"n": 4, "seed": 7})
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert first.content == second.content
    assert first.headers["x-seed"] == "7" and first.headers["x-sampler"] == DEFAULT_SAMPLER
    grid = pixels(first.content)
    assert grid.shape == (2 + 66, 2 + 4 * 66, 3) and grid[2:66, 2:66].std() > 10
    body = client.post("/generate", json={"n": 4, "seed": 7, "format": "json"}).json()
    checkpoint = read_checkpoint(SHIPPED)
    net = vae_from_checkpoint(checkpoint, SHIPPED)
    z, _ = latent_codes(DEFAULT_SAMPLER, net, checkpoint, 4, 7)
    assert np.allclose(np.array(body["latents"]), z.numpy(), atol=1e-6)
    with torch.no_grad():
        expected = to_uint8(net.decode(z)).permute(0, 2, 3, 1).numpy().astype(int)
    singles = np.stack([pixels(base64.b64decode(b)) for b in body["images"]]).astype(int)
    assert np.abs(singles - expected).max() <= 1  # ONNX: at most one uint8 step from eager
    assert np.array_equal(grid[2:66, 2:66], singles[0])
    random_seed = client.post("/generate", json={"n": 1, "format": "json"}).json()
    assert 0 <= random_seed["seed"] < 2**32


def test_concurrent_requests_share_decoder_calls_and_keep_their_bytes(
    client: httpx.Client, url: str
) -> None:
    """16 seeded /generate at once are micro-batched (the batch-size histogram records calls
    of more than one request's images), and each answer has exactly the bytes of the same
    request sent alone (a batch of its own)."""

    def batched_calls() -> float:
        text = client.get("/metrics").text
        match = re.search(r'vae_cats_decode_batch_images_bucket\{le="1.0"\} (\S+)', text)
        total = re.search(r"vae_cats_decode_batch_images_count (\S+)", text)
        assert match and total, text[-2000:]
        return float(total.group(1)) - float(match.group(1))

    def one(seed: int) -> bytes:
        with httpx.Client(base_url=url, timeout=120) as own:
            response = own.post("/generate", json={"n": 1 + seed % 3, "seed": seed})
            assert response.status_code == 200, response.text
            return response.content

    before = batched_calls()
    with ThreadPoolExecutor(max_workers=16) as pool:
        together = list(pool.map(one, range(16)))
    assert batched_calls() > before, "no decoder call served more than one image"
    alone = [one(seed) for seed in range(16)]
    assert together == alone


def test_decode_and_interpolate(client: httpx.Client) -> None:
    codes = client.post("/generate", json={"n": 2, "seed": 3, "format": "json"}).json()["latents"]
    decoded = client.post("/decode", json={"latents": codes, "format": "json"}).json()["images"]
    again = client.post("/generate", json={"n": 2, "seed": 3, "format": "json"}).json()["images"]
    assert decoded == again
    strip = client.post(
        "/interpolate",
        json={"latent_a": codes[0], "latent_b": codes[1], "steps": 5, "format": "json"},
    ).json()["images"]
    assert len(strip) == 5 and strip[0] == decoded[0] and strip[-1] == decoded[1]
    by_seed = client.post("/interpolate", json={"seed_a": 1, "seed_b": 2, "steps": 6})
    assert by_seed.status_code == 200 and pixels(by_seed.content).shape == (68, 2 + 6 * 66, 3)
    raw = [member[1] for member in bundled_members(2)]
    files = {"file_a": ("a.jpg", raw[0]), "file_b": ("b.jpg", raw[1])}
    uploads = client.post("/interpolate", files=files, data={"steps": "4", "format": "json"})
    assert uploads.status_code == 200, uploads.text
    assert len(uploads.json()["images"]) == 4


def test_reconstruct_face_json_and_png(client: httpx.Client) -> None:
    raw = face()
    body = client.post("/reconstruct", files={"file": ("cat.jpg", raw)}).json()
    original = pixels(base64.b64decode(body["original"]))
    assert np.array_equal(original, decode_image(raw).permute(1, 2, 0).numpy())
    recon = pixels(base64.b64decode(body["reconstruction"]))
    assert recon.shape == (64, 64, 3) and abs(recon.astype(int) - original).mean() < 40
    assert 0.3 < body["ssim"] <= 1 and 15 < body["psnr"] < 60 and len(body["latent"]) == LATENT_DIM
    assert body["drift"]["is_outlier"] is False, body["drift"]
    assert body["drift"]["verdict"].endswith(".")
    png = client.post("/reconstruct?format=png", files={"file": ("cat.jpg", raw)})
    assert np.array_equal(pixels(png.content), recon)
    assert float(png.headers["x-ssim"]) == pytest.approx(body["ssim"], abs=1e-5)
    b64 = base64.b64encode(raw).decode()
    same = client.post("/reconstruct", data={"image_base64": b64}).json()
    assert same["reconstruction"] == body["reconstruction"]


@pytest.mark.parametrize(
    "mode", ["RGBA", "P", "I;16", "L"], ids=["rgba", "palette", "16-bit", "greyscale"]
)
def test_upload_modes_are_converted_as_ingest_converts_them(
    client: httpx.Client, mode: str
) -> None:
    rgb = Image.open(io.BytesIO(face())).convert("RGB")
    if mode == "RGBA":
        image = rgb.convert("RGBA")
        image.putalpha(Image.linear_gradient("L").resize(rgb.size))
    elif mode == "I;16":
        image = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    else:
        image = rgb.convert(mode)
    raw = image_bytes(image)
    body = client.post("/reconstruct", files={"file": ("x.png", raw)}).json()
    original = pixels(base64.b64decode(body["original"]))
    assert np.array_equal(original, decode_image(raw).permute(1, 2, 0).numpy())


def test_bad_uploads_are_one_line_4xx(client: httpx.Client) -> None:
    jpeg = face()
    bomb = image_bytes(Image.new("1", (20000, 20000)))
    assert len(bomb) < 100_000
    cases = {
        "empty": (b"", 400, "empty"),
        "text": (b"hello, not a picture\n" * 10, 400, "not an image"),
        "truncated": (jpeg[: len(jpeg) // 2], 400, "file"),
        "bomb": (bomb, 400, "too many pixels"),
    }
    for name, (raw, status, word) in cases.items():
        response = client.post("/reconstruct", files={"file": (f"{name}.png", raw)})
        assert_one_line(response, status, word)
    assert_one_line(client.post("/reconstruct", data={"image_base64": "%%%"}), 422, "base64")
    assert_one_line(client.post("/reconstruct"), 422, "file")
    assert client.get("/healthz").status_code == 200


def test_bad_json_is_422_naming_the_field(client: httpx.Client) -> None:
    cases = [
        ("/generate", {"n": 257}, "n"),
        ("/generate", {"n": -1}, "n"),
        ("/generate", {"n": "four"}, "n"),
        ("/generate", {"n": 2, "sampler": "vae"}, "sampler"),
        ("/generate", {"n": 2, "seed": -5}, "seed"),
        ("/interpolate", {"seed_a": 1, "seed_b": 2, "steps": 0}, "steps"),
        ("/interpolate", {"seed_a": 1, "seed_b": 2, "steps": 10000}, "steps"),
        ("/interpolate", {"seed_a": 1}, "seed_a"),
        ("/decode", {"latents": [[0.0] * 3]}, "latents.0"),
        ("/decode", {"latents": []}, "latents"),
    ]
    for path, body, field in cases:
        response = client.post(path, json=body)
        assert_one_line(response, 422, field)
        assert response.json()["detail"].startswith(field), (body, response.json())
    malformed = client.post(
        "/generate", content=b'{"n": 4', headers={"content-type": "application/json"}
    )
    assert_one_line(malformed, 422, "body", "JSON")
    files = {"file_a": ("a.jpg", face()), "file_b": ("b.jpg", face())}
    assert_one_line(client.post("/interpolate", files=files, data={"steps": "x"}), 422, "steps")


def test_small_input_mistakes_get_messages_that_name_them(client: httpx.Client) -> None:
    """JSON sent as text/plain names the content type; an empty base64 field names that
    field; a PNG declaring 30000 x 30000 pixels meets the API's 2048 x 2048 cap (read from its
    header), not Pillow's 178-million-pixel decompression-bomb limit."""
    plain = client.post("/generate", content=b'{"n": 2}', headers={"content-type": "text/plain"})
    assert_one_line(plain, 422, "body", "Content-Type: application/json", "text/plain")
    assert_one_line(client.post("/reconstruct", data={"image_base64": ""}), 422, "image_base64")
    assert (
        client.post("/reconstruct", data={"image_base64": ""})
        .json()["detail"]
        .startswith("image_base64: is empty")
    )
    huge = client.post("/reconstruct", files={"file": ("huge.png", declared_png(30000, 30000))})
    assert_one_line(huge, 400, "too many pixels", "30000x30000", str(2048 * 2048))
    assert "178956970" not in huge.json()["detail"]


def test_upload_over_the_limit_is_413(client: httpx.Client) -> None:
    big = face() + b"\0" * LIMIT
    response = client.post("/reconstruct", files={"file": ("big.jpg", big)})
    # The real size of the part, not the limit + 1 bytes read of it.
    assert_one_line(response, 413, "limit", f"image of {len(big)} bytes")
    encoded = base64.b64encode(b"\0" * (LIMIT + 10)).decode()
    assert_one_line(client.post("/reconstruct", data={"image_base64": encoded}), 413, "limit")
    assert client.get("/healthz").status_code == 200


def _raw_request(url: str, head: bytes, body_chunks: list[bytes]) -> bytes:
    """Send a request by hand, chunk by chunk, and stop sending as soon as the server
    answers; returns what it answered before closing the connection."""
    address = urlparse(url)
    answer = b""
    with socket.create_connection((address.hostname, address.port), timeout=60) as conn:
        conn.sendall(head)
        try:
            for part in body_chunks:
                if select.select([conn], [], [], 0.02)[0]:
                    break
                conn.sendall(part)
            while chunk := conn.recv(65536):  # the server closes the connection after a 413
                answer += chunk
        except ConnectionResetError:  # closed with our unread bytes: the answer came first
            pass
    return answer


def test_413_comes_before_the_body_is_read(url: str, client: httpx.Client) -> None:
    """A declared 50 MB body is refused from its Content-Length alone, with no body sent;
    a chunked body is refused once it passes the limit, before its last chunk."""
    head = (
        b"POST /reconstruct HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
        b"boundary=b\r\nContent-Length: 52428800\r\n\r\n"
    )
    answer = _raw_request(url, head, [])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"detail"' in answer
    chunk = b"x" * 65536
    chunked = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 60  # 3.9 MB, never terminated
    head = (
        b"POST /reconstruct HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
        b"boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    answer = _raw_request(url, head, chunked)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert client.get("/healthz").status_code == 200


def test_healthz_answers_fast_during_a_large_generate(client: httpx.Client, url: str) -> None:
    done = threading.Event()
    result: dict[str, int] = {}

    def generate() -> None:
        with httpx.Client(base_url=url, timeout=300) as other:
            result["status"] = other.post("/generate", json={"n": 256, "seed": 1}).status_code
        done.set()

    worker = threading.Thread(target=generate)
    worker.start()
    times = []
    time.sleep(0.05)
    while not done.is_set():
        start = time.perf_counter()
        assert client.get("/healthz").status_code == 200
        times.append(time.perf_counter() - start)
        time.sleep(0.05)
    worker.join()
    assert result["status"] == 200
    assert len(times) >= 3, "the generate call ended before /healthz was polled"
    assert max(times) < 0.1, f"slowest /healthz {max(times) * 1000:.0f} ms of {len(times)}"


def test_batch_drift_and_metrics(client: httpx.Client) -> None:
    faces = [raw for _, raw in bundled_members(40)]
    files = [("files", (f"{i}.jpg", raw)) for i, raw in enumerate(faces)]
    same = client.post("/drift", files=files).json()
    assert same["n"] == 40 and same["alpha"] == 0.05
    turned = [
        ("files", (f"{i}.png", image_bytes(Image.open(io.BytesIO(raw)).rotate(90))))
        for i, raw in enumerate(faces)
    ]
    shifted = client.post("/drift", files=turned).json()
    assert shifted["is_drift"] is True and shifted["p_value"] < same["p_value"]
    assert_one_line(client.post("/drift", files=files[:1]), 422, "files")
    # Repeated faces are removed before the test and counted: 64 files cycled from the 40
    # test as the 40 alone do (before: p = 0.002, drift).
    cycled = [("files", (f"{i}.jpg", faces[i % 40])) for i in range(64)]
    repeated = client.post("/drift", files=cycled).json()
    assert repeated["n"] == 40 and repeated["duplicates_removed"] == 24, repeated
    assert repeated["p_value"] == same["p_value"] and repeated["is_drift"] is False
    assert same["duplicates_removed"] == 0
    twice = [("files", (f"{i}.jpg", faces[0])) for i in range(2)]
    assert_one_line(client.post("/drift", files=twice), 422, "files", "1 distinct image among 2")
    metrics = client.get("/metrics").text
    assert 'vae_cats_http_requests_total{method="POST",route="/drift",status="200"}' in metrics
    assert 'vae_cats_http_request_duration_seconds_bucket{le="0.005",route="/healthz"}' in metrics
    assert "vae_cats_http_requests_in_flight" in metrics
    assert 'vae_cats_model_info{backend="onnx"' in metrics and "data_hash=" in metrics
    assert 'vae_cats_drift_verdicts_total{outlier="false"}' in metrics


def test_page_and_openapi(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    schema = client.get("/openapi.json").json()
    assert {"/generate", "/reconstruct", "/interpolate", "/decode", "/drift"} <= set(
        schema["paths"]
    )
    assert client.get("/docs").status_code == 200
    assert_one_line(client.get("/nowhere"), 404, "Not Found")


def test_schemathesis_finds_no_server_error(url: str) -> None:
    """Property-based requests built from the OpenAPI schema (10 per operation, derandomized):
    never a 5xx, always a one-line JSON detail for a 4xx."""
    calls = schemathesis_calls(url)
    assert len(calls) >= 9 and {"POST /generate", "POST /reconstruct", "POST /drift"} <= set(calls)


def test_model_without_drift_statistics_or_mixture(tmp_path: Path) -> None:
    """A checkpoint with the network only (like a training checkpoint) is served: drift is
    reported as unavailable, not a 500, and the mixture sampler is refused with a 422."""
    checkpoint = read_checkpoint(SHIPPED)
    bare = {key: checkpoint[key] for key in ("net_config", "state_dict", "lineage")}
    path = tmp_path / "bare.ckpt"
    torch.save(bare, path)
    with TestClient(create_app(Settings(model=path, backend="torch", threads=1))) as client:
        deadline = time.monotonic() + 120
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        card = client.get("/model").json()
        assert card["drift"] is None and card["latent_directions"] is None
        assert card["samplers"] == ["normal"] and card["default_sampler"] == "normal"
        assert client.post("/generate", json={"n": 2, "seed": 0}).status_code == 200
        assert_one_line(client.post("/generate", json={"n": 2, "sampler": "gmm"}), 422, "sampler")
        body = client.post("/reconstruct", files={"file": ("cat.jpg", face())}).json()
        assert body["drift"] is None and 0 < body["ssim"] <= 1
        files = [("files", (f"{i}.jpg", face())) for i in range(3)]
        assert_one_line(client.post("/drift", files=files), 409, "drift statistics")


def test_cli_refuses_a_bad_model_in_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    for model in (junk, tmp_path / "missing.ckpt"):
        result = subprocess.run(
            [sys.executable, "-m", "vae_cats.serving", "--model", str(model)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("serving: error:"), lines
        assert str(model) in lines[0]
    workers = subprocess.run(
        [sys.executable, "-m", "vae_cats.serving", "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert workers.returncode == 2
    assert workers.stderr.strip() == "serving: error: --workers must lie in 1..64, got 0"


def test_image_entry_point_dispatches_serve_and_predict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The predict image's entry point: `serve ...` is the API's command line, anything else
    the predict script's (both refuse a missing model in one line, exit code 2)."""
    missing = tmp_path / "missing.ckpt"
    assert image_entry(["serve", "--model", str(missing)]) == 2
    assert capsys.readouterr().err.startswith("serving: error:")
    assert image_entry(["--model", str(missing), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("predict_model: error:")
