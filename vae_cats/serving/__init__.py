"""The HTTP API of vae_cats: FastAPI + uvicorn over the inference core, with an ONNX Runtime
or eager PyTorch backend, drift scores and Prometheus metrics (docs/serving.md).

``python -m vae_cats.serving --model PATH --backend onnx|torch``; the app itself is
``vae_cats.serving.app.create_app(Settings(...))``.
"""
