"""Cat-face data: reading sources, decoding and validation, deduplication, the split and its
manifest, the processed copy on disk; ``datamodule`` serves it to Lightning."""
