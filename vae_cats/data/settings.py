"""The settings of an ingest, in one place: the ingest CLI builds its options from them, the
DataModule builds them from its config keys, and the manifest records them (a processed
ingest is reused only when they match)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from vae_cats.data.decode import MAX_PIXELS, WRONG_SIZE_ACTIONS
from vae_cats.data.sources import MAX_FILE_BYTES

# Re-encoded or slightly re-cropped copies of one cats64 photo lie within 0-6 pHash bits of
# each other, but so do a few different cats with similar markings; the thumbnail
# correlation of vae_cats.data.dedupe keeps those apart.
NEAR_DUPLICATE_BITS = 6


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class IngestSettings:
    """How a source is ingested; checked when made.

    Raises:
        ValueError: Naming the field whose value is of the wrong type or out of range.
    """

    image_size: int = field(default=64, metadata=_help("side in pixels of the stored images"))
    seed: int = field(default=42, metadata=_help("seed of the train/val/test split"))
    val_fraction: float = field(
        default=0.1, metadata=_help("share of distinct photos in the validation split, [0, 1)")
    )
    test_fraction: float = field(
        default=0.1, metadata=_help("share of distinct photos in the test split, [0, 1)")
    )
    wrong_size: str = field(
        default="resize",
        metadata=_help(
            "images that are not image_size square: centre-crop and resize them (listed as "
            "resized), or reject them"
        ),
    )
    max_pixels: int = field(
        default=MAX_PIXELS,
        metadata=_help("largest width x height, read from the header before decoding"),
    )
    max_file_bytes: int = field(
        default=MAX_FILE_BYTES, metadata=_help("largest file in bytes, refused before reading")
    )
    near_duplicate_bits: int = field(
        default=NEAR_DUPLICATE_BITS,
        metadata=_help(
            "largest perceptual-hash distance in bits between two copies of one photo; "
            "-1 turns near-duplicate grouping off"
        ),
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            wanted = (int, float) if f.type == "float" else (int,) if f.type == "int" else (str,)
            if isinstance(value, bool) or not isinstance(value, wanted):
                raise ValueError(f"{f.name} must be of type {f.type}, got {value!r}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {self.image_size}")
        for name in ("val_fraction", "test_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                "val_fraction + test_fraction must be below 1, "
                f"got {self.val_fraction} + {self.test_fraction}"
            )
        if self.wrong_size not in WRONG_SIZE_ACTIONS:
            raise ValueError(
                f"wrong_size must be one of {WRONG_SIZE_ACTIONS}, got {self.wrong_size!r}"
            )
        for name in ("max_pixels", "max_file_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not -1 <= self.near_duplicate_bits <= 64:
            raise ValueError(
                f"near_duplicate_bits must lie in [-1, 64], got {self.near_duplicate_bits}"
            )

    def as_dict(self) -> dict[str, Any]:
        """The settings as the manifest records them."""
        return asdict(self)
