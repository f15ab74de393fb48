"""Helpers shared by the tests: real samples of cat faces, hostile uploads, real subprocess
runs, and checks of a real API server's answers."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytorch_lightning as pl
from PIL import Image

from vae_cats.data.sources import BUNDLED_SAMPLE

PROJECT_DIR = Path(__file__).resolve().parent.parent
TRAIN_SCRIPT = PROJECT_DIR / "vae_cats" / "train_model.py"
PREDICT_SCRIPT = PROJECT_DIR / "vae_cats" / "predict_model.py"
EXPERIMENTS = sorted(p.stem for p in (PROJECT_DIR / "conf" / "experiments").glob("*.yaml"))

# One epoch of 3 real optimiser steps, one validation batch, bundled data, CPU: seconds.
FAST_TRAIN_OVERRIDES = [
    "data.source=bundled",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.max_time=null",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    # exp1 compiles its SSIM loss: tens of seconds per process that a 3-step run never repays.
    "lit_module.compile_loss=false",
]


def bundled_members(count: int) -> list[tuple[str, bytes]]:
    """The first ``count`` real JPEG files of the bundled sample, as (file name, bytes)."""
    with tarfile.open(BUNDLED_SAMPLE) as archive:
        members = [m for m in archive if m.isfile()][:count]
        return [(Path(m.name).name, archive.extractfile(m).read()) for m in members]  # type: ignore[union-attr]


def image_bytes(image: Image.Image, image_format: str = "PNG", **params: Any) -> bytes:
    """``image`` encoded in ``image_format`` (Pillow's save parameters in ``params``)."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **params)
    return buffer.getvalue()


def make_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """Write (name, bytes) pairs as a tar archive at ``path``."""
    with tarfile.open(path, "w") as archive:
        for name, raw in members:
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
    return path


def hostile_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A tar of the given faces plus what a safe reader must refuse: a copy of the first face
    under ``../escape.jpg`` and ``/abs/evil.jpg``, and ``link.jpg``, a symlink to /etc/passwd.
    """
    evil = members[0][1]
    make_tar(path, [*members[1:], ("../escape.jpg", evil), ("/abs/evil.jpg", evil)])
    with tarfile.open(path, "a") as archive:
        link = tarfile.TarInfo("link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    return path


def declared_png(width: int, height: int) -> bytes:
    """A PNG that is only a signature, an IHDR declaring width x height (8-bit RGB) and IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
        )

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


# Refused by any upload endpoint: not an image, broken, or over a limit (the API's 2 MB upload
# limit, its 2048 x 2048 pixel cap). The other files of ``hostile_uploads`` are odd but
# decodable: the API takes them (converted to RGB, centre-cropped and resized).
UNUSABLE_UPLOADS = frozenset(
    {
        "empty.jpg", "text.jpg", "random.jpg", "script.svg", "half.jpg", "head.jpg", "soi.jpg",
        "corrupt.jpg", "signature.png", "declared_30000.png", "declared_0.png",
        "declared_tall.png", "bomb.png", "truncated.png", "raw_pixels.png", "declared.bmp",
        "faces.tar", "escape.zip", "face.jpg.gz", "oversize.jpg",
    }
)  # fmt: skip


def hostile_uploads(folder: Path) -> list[tuple[str, bytes]]:
    """Files a user may upload as an image, named by what they are (the names in
    ``UNUSABLE_UPLOADS`` no server can use); real faces of the bundled sample beneath.

    Not images: empty, text, random bytes, an SVG with a script, raw pixels, archives of faces
    (a tar with ``../``, absolute and symlink members, as ``hostile_tar`` writes it, in
    ``folder``; a zip with a ``../`` member; a gzipped face). Broken: a face JPEG cut in half,
    to 100 bytes or to its SOI marker, its marker segments zeroed; a PNG cut in half, or only
    its signature. Decompression bombs: PNGs declaring 30000 x 30000, 0 x 0 and 1 x (2^31 - 1)
    pixels in their header, a real 20000 x 20000 1-bit PNG of 50 KB, a BMP header declaring
    50000 x 50000. Over the upload limit: a face padded to 2 MiB + 1 byte. Odd but decodable:
    trailing garbage after a face, one pixel, a 2048 x 1 strip, a float32 and a 16-bit TIFF,
    a CMYK JPEG, a greyscale PNG with alpha, a 3-frame GIF.
    """
    members = bundled_members(4)
    jpeg = members[0][1]
    face = Image.open(io.BytesIO(jpeg)).convert("RGB")
    png = image_bytes(face)
    corrupt = bytearray(jpeg)
    corrupt[4:40] = bytes(36)  # SOI intact, the marker segments after it destroyed
    bmp = bytearray(image_bytes(Image.new("RGB", (1, 1)), "BMP"))
    bmp[18:26] = struct.pack("<ii", 50000, 50000)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("../escape.jpg", jpeg)
        zipped.writestr("cat.jpg", members[1][1])
    frames = [face.rotate(angle) for angle in (0, 90, 180)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    noise = random.Random(0).randbytes(4096)
    return [
        ("empty.jpg", b""),
        ("text.jpg", b"hello, not a picture\n" * 10),
        ("random.jpg", noise),
        ("script.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
        ("half.jpg", jpeg[: len(jpeg) // 2]),
        ("head.jpg", jpeg[:100]),
        ("soi.jpg", b"\xff\xd8\xff"),
        ("corrupt.jpg", bytes(corrupt)),
        ("signature.png", b"\x89PNG\r\n\x1a\n"),
        ("declared_30000.png", declared_png(30000, 30000)),
        ("declared_0.png", declared_png(0, 0)),
        ("declared_tall.png", declared_png(1, 2**31 - 1)),
        ("bomb.png", image_bytes(Image.new("1", (20000, 20000)))),
        ("truncated.png", png[: len(png) // 2]),
        ("raw_pixels.png", face.tobytes()),
        ("declared.bmp", bytes(bmp)),
        ("faces.tar", hostile_tar(folder / "faces.tar", members).read_bytes()),
        ("escape.zip", archive.getvalue()),
        ("face.jpg.gz", gzip.compress(jpeg)),
        ("oversize.jpg", jpeg + bytes(2 * 1024 * 1024 + 1)),
        ("trailing.jpg", jpeg + noise),
        ("one_pixel.png", image_bytes(Image.new("RGB", (1, 1), (200, 100, 50)))),
        ("strip.png", image_bytes(face.resize((2048, 1)))),
        ("float.tiff", image_bytes(Image.new("F", (64, 64), 1e30), "TIFF")),
        ("16bit.tiff", image_bytes(face.convert("L").convert("I;16"), "TIFF")),
        ("cmyk.jpg", image_bytes(face.convert("CMYK"), "JPEG")),
        ("grey_alpha.png", image_bytes(face.convert("LA"))),
        ("animated.gif", gif.getvalue()),
    ]


def assert_one_line(response: httpx.Response, status: int, *words: str) -> None:
    """``response`` has ``status`` and a JSON ``detail`` of one line holding every word."""
    assert response.status_code == status, response.text[:300]
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail, detail
    for word in words:
        assert word in detail, detail


def schemathesis_calls(url: str, max_examples: int = 10) -> Counter[str]:
    """Property-based requests built from the OpenAPI schema of the server at ``url`` (on
    127.0.0.1; at most ``max_examples`` per operation, derandomized): asserts that none gets a
    5xx and that every 4xx with a JSON body has a one-line ``detail``. Returns the requests
    sent per operation (``POST /generate``). schemathesis.pytest's fixture loader fails under
    pytest 9, so hypothesis drives the strategies directly."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.core.result import Ok

    assert urlparse(url).hostname == "127.0.0.1", url
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    calls: Counter[str] = Counter()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # an operation the schema describes wrongly
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=max_examples,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def no_server_error(case: schemathesis.Case) -> None:
            response = case.call(base_url=url, timeout=120)
            calls[f"{case.method.upper()} {case.path}"] += 1
            assert response.status_code < 500, (case.method, case.path, response.text[:300])
            if response.status_code >= 400 and "json" in response.headers["content-type"]:
                assert "\n" not in response.json()["detail"], response.text[:300]

        no_server_error()
    return calls


def run_train(
    run_dir: Path, *overrides: str, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """Run the Hydra training entry point as a real subprocess with outputs in ``run_dir``."""
    command = [
        sys.executable,
        str(TRAIN_SCRIPT),
        *overrides,
        f"hydra.run.dir={run_dir}",
        f"data.processed_dir={run_dir / 'processed'}",
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=PROJECT_DIR
    )


def wandb_records(run: Path) -> Iterator[Any]:
    """Every record of an offline W&B run folder's ``run-*.wandb`` file, in write order, as
    ``wandb.proto.wandb_internal_pb2.Record`` (wandb 0.31 ships no Python reader for it).

    The file is W&B's LevelDB-style log: a 7-byte header, then 32 KiB blocks of records
    (4-byte CRC, 2-byte length, 1-byte type: full, first, middle, last), each a serialized
    ``Record``. A killed writer may leave a torn tail, where reading stops.
    """
    from wandb.proto import wandb_internal_pb2

    data = next(run.glob("run-*.wandb")).read_bytes()
    payload, pos, block = b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 or len(chunk) < length:
            return
        payload = chunk if kind in (1, 2) else payload + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            yield record


def wandb_history(run: Path) -> list[dict[str, Any]]:
    """The history rows of an offline W&B run (one per ``log`` call), values JSON-decoded;
    nested keys joined with ``/`` (``val/samples/filenames``)."""
    return [
        {
            item.key or "/".join(item.nested_key): json.loads(item.value_json)
            for item in r.history.item
        }
        for r in wandb_records(run)
        if r.WhichOneof("record_type") == "history"
    ]


def run_script(
    script: Path, *args: str, timeout: int = 300, cwd: Path = PROJECT_DIR
) -> subprocess.CompletedProcess[str]:
    """Run a Python script of the project as a real subprocess from ``cwd`` (default the
    project folder), stdout and stderr captured as text."""
    command = [sys.executable, str(script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def run_predict(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """Run the predict script as a real subprocess."""
    return run_script(PREDICT_SCRIPT, *args, timeout=timeout)


class BatchRecorder(pl.Callback):
    """Test probe: appends a flip-invariant fingerprint (pixel sum) of every training image
    this process sees to ``<out_dir>/images_rank<global rank>.txt``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        sums = (batch.double() * 255).round().sum(dim=(1, 2, 3)).long().tolist()
        with (self.out_dir / f"images_rank{trainer.global_rank}.txt").open("a") as handle:
            handle.writelines(f"{s}\n" for s in sums)


class KillAtStep(pl.Callback):
    """Test probe: SIGKILLs its own process, as a pre-empted job dies, at global step ``step``:
    when a training batch starts there (every checkpoint of the steps before is on disk), or
    with ``in_validation=True`` when a validation (not the sanity check) starts there."""

    def __init__(self, step: int, in_validation: bool = False) -> None:
        self.step = step
        self.in_validation = in_validation

    def _kill_at(self, trainer: pl.Trainer) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self.in_validation:
            self._kill_at(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.in_validation and not trainer.sanity_checking:
            self._kill_at(trainer)


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The message of a training run or sweep refused before any work: exit 2, nothing on
    stdout, one stderr line ``train_model: error: ...``."""
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-3000:])
    assert result.stdout.strip() == "", result.stdout[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("train_model: error: "), lines[0]
    return lines[0].removeprefix("train_model: error: ")
