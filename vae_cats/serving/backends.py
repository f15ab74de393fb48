"""The two ways the API runs the network: eager PyTorch, or ONNX Runtime on graphs exported
from it. Both take and give torch tensors; the noise is drawn in Python and passed in as z,
never inside a graph."""

from __future__ import annotations

import io
import threading
import warnings
from typing import Protocol

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor, nn

from vae_cats.model import BaseVAE

EXPORT_BATCH = 8
OPSET = 17


class Backend(Protocol):
    """Encoder and decoder of one model; each call is serialised (one at a time), since each
    already uses every thread the backend was given."""

    name: str

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images x (B, 3, H, W) in [0, 1] -> (mu, logvar), each (B, latent_dim)."""
        ...

    def decode(self, z: Tensor) -> Tensor:
        """Codes z (B, latent_dim) -> images (B, 3, H, W) in [0, 1]."""
        ...


class TorchBackend:
    """Eager PyTorch on the CPU, ``threads`` intra-op threads (set process-wide)."""

    name = "torch"

    def __init__(self, net: BaseVAE, threads: int) -> None:
        torch.set_num_threads(threads)
        self.net = net.eval()
        self._lock = threading.Lock()

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with self._lock, torch.inference_mode():
            mu, logvar = self.net.encode(x.float())
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        with self._lock, torch.inference_mode():
            return self.net.decode(z.float())


class _Encoder(nn.Module):
    def __init__(self, net: BaseVAE) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.net.encode(x)


class _Decoder(nn.Module):
    def __init__(self, net: BaseVAE) -> None:
        super().__init__()
        self.net = net

    def forward(self, z: Tensor) -> Tensor:
        return self.net.decode(z)


def export_onnx(net: BaseVAE, image_size: int) -> tuple[bytes, bytes]:
    """ONNX graphs (opset 17) of the encoder (``x`` -> ``mu``, ``logvar``) and the decoder
    (``z`` -> ``image``), traced at batch ``EXPORT_BATCH`` with a dynamic batch axis.

    Uses the TorchScript exporter (``dynamo=False``): it needs no onnxscript and runs offline.
    """
    net = net.eval()
    graphs = []
    specs = [
        (
            _Encoder(net),
            torch.rand(EXPORT_BATCH, 3, image_size, image_size),
            ["x"],
            ["mu", "logvar"],
        ),
        (_Decoder(net), torch.randn(EXPORT_BATCH, net.latent_dim), ["z"], ["image"]),
    ]
    for module, example, inputs, outputs in specs:
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of dynamo, which needs onnxscript.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to a file object
                input_names=inputs,
                output_names=outputs,
                dynamic_axes={name: {0: "batch"} for name in inputs + outputs},
                opset_version=OPSET,
                dynamo=False,
            )
        graphs.append(buffer.getvalue())
    return graphs[0], graphs[1]


class OnnxBackend:
    """ONNX Runtime (CPU execution provider) on the graphs of ``export_onnx``."""

    name = "onnx"

    def __init__(self, net: BaseVAE, image_size: int, threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle threads sleep instead of spinning: the cores are shared with the web server.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        encoder, decoder = export_onnx(net, image_size)
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(encoder, options, providers=providers)
        self.decoder = ort.InferenceSession(decoder, options, providers=providers)
        self._lock = threading.Lock()

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with self._lock:
            mu, logvar = self.encoder.run(None, {"x": _numpy(x)})
        return torch.from_numpy(mu), torch.from_numpy(logvar)

    def decode(self, z: Tensor) -> Tensor:
        with self._lock:
            (images,) = self.decoder.run(None, {"z": _numpy(z)})
        return torch.from_numpy(images)


def _numpy(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().float().numpy())


def make_backend(name: str, net: BaseVAE, image_size: int, threads: int) -> Backend:
    """The backend called ``name`` (``onnx`` or ``torch``).

    Raises:
        ValueError: For another name.
    """
    if name == "torch":
        return TorchBackend(net, threads)
    if name == "onnx":
        return OnnxBackend(net, image_size, threads)
    raise ValueError(f"unknown backend {name!r} (choose onnx or torch)")
