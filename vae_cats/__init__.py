"""vae_cats: a convolutional VAE for 64x64 cat faces, from training to serving.

Draw cats with the shipped model in Python (``vae_cats.predict``; any checkpoint path, as a
``str`` or ``Path``, goes to ``load_model``)::

    from vae_cats.predict import load_model, sample_images, save_grid

    model = load_model()  # the shipped model; or load_model("RUN/checkpoints/best.ckpt")
    cats = sample_images(model, 16, seed=0)  # (16, 3, 64, 64) floats in [0, 1]
    save_grid(cats, "cats.png")

The same seed gives the same faces as ``predict_model.py --n 16 --seed 0`` and as
``POST /generate {"n": 16, "seed": 0}`` on a server with the torch backend. Layers and
modules: docs/architecture.md.
"""
