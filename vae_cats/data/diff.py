"""What changed between two versions of the data: two processed ingests compared file by file.

    python -m vae_cats.data.diff OLD NEW [--json]

``OLD`` and ``NEW`` are processed ingest folders (holding ``manifest.json``, as written by
``python -m vae_cats.data.ingest``) or ``manifest.json`` files. The diff reports:

- the two data hashes, the file and kept-image counts, every ``num_*`` count of the manifests;
- files added and removed (every name the ingest saw: kept, copies dropped as duplicates,
  rejected);
- files newly rejected, by reason: rejected in NEW and not rejected for that reason in OLD
  (added files included), and files no longer rejected;
- photos whose split changed: a kept image of NEW whose file was in another split in OLD
  (kept or a copy there), or, for a renamed file, whose photo was (the same split key: the
  smallest pixel sha256 among its copies; ``sha256`` in manifests that record no split key);
- duplicates that now straddle splits: a file dropped in NEW as a copy of a kept image,
  whose photo sat in another split in OLD (where it was kept itself, or a copy of an image
  of that split). A model trained on OLD has seen it in that split.

Rules (the exit code is 1 when one fails):

1. the kept images drop by at most ``MAX_KEPT_DROP`` (5%);
2. no photo moves from train to test: neither a kept photo nor a straddling duplicate (a
   model trained on OLD would be scored on its own training images);
3. no new rejection reason: every reason with files in NEW had files in OLD (a first
   corrupt or truncated file usually means a broken upload).

The ingest's split is a seeded permutation of the sorted split keys, so adding or removing
any photo reassigns splits, and rule 2 then fails: the diff says so before a model
trained on the old data is compared on the new test split.

Manifests are read defensively: missing optional fields count as empty, unknown fields are
ignored, ``rejected`` may be ``{name: "reason: detail"}`` or a list of ``{name, reason}``.
A missing path, a folder without a manifest or a malformed manifest is a one-line error and
exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MAX_KEPT_DROP = 0.05
# ingest_version too: version 3 split by hash bucket, so a diff across it moves photos once.
SETTINGS = (
    "image_size",
    "seed",
    "val_fraction",
    "test_fraction",
    "wrong_size",
    "ingest_version",
)
# Manifest counts the diff reports under its own names, from the lists it reads
# (``files``, ``kept images``): shown once, not twice.
COUNTED_FROM_LISTS = ("num_files", "num_kept")
# Names printed per list in the text report; --json lists them all.
SHOWN = 10


class ManifestError(ValueError):
    """A path that is not a processed ingest or a readable manifest."""


@dataclass(frozen=True)
class DataVersion:
    """The parts of one manifest the diff compares.

    Attributes:
        data_hash: The manifest's ``data_hash`` (None when absent).
        kept: Kept photos, split key (else pixel sha256) -> (file name, split).
        split_of: Every file name that is kept or a dropped copy -> the split of its image.
        copies: Names dropped as exact or near duplicates -> the name of their kept image.
        rejected: Rejected file name -> reason (duplicates included, as the ingest lists them).
        counts: The manifest's integer ``num_*`` fields but ``COUNTED_FROM_LISTS``, and
            ``resized images`` when its images record ``resized_from``.
        settings: The ingest settings in ``SETTINGS`` that the manifest records.
    """

    data_hash: str | None
    kept: dict[str, tuple[str, str]]
    split_of: dict[str, str]
    copies: dict[str, str]
    rejected: dict[str, str]
    counts: dict[str, int]
    settings: dict[str, Any]

    @property
    def files(self) -> set[str]:
        """Every file name the ingest saw."""
        return set(self.split_of) | set(self.rejected)


@dataclass
class Rule:
    name: str
    passed: bool
    detail: str


@dataclass
class DataDiff:
    """Everything ``diff`` found; ``asdict`` of it is the ``--json`` output."""

    old_data_hash: str | None
    new_data_hash: str | None
    counts: dict[str, tuple[int | None, int | None]]
    settings_changed: dict[str, tuple[Any, Any]]
    added: list[str]
    removed: list[str]
    newly_rejected: dict[str, list[str]]
    no_longer_rejected: list[str]
    split_changes: list[dict[str, str]]
    split_transitions: dict[str, int]
    straddling_duplicates: list[dict[str, str]]
    rules: list[Rule] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(rule.passed for rule in self.rules)


def _field(mapping: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = mapping.get(key)
    if not isinstance(value, kind):
        raise ManifestError(f"{where}: field {key!r} is missing or not a {kind.__name__}")
    return value


def _reason_of(entry: Any) -> str:
    # The ingest writes "reason: detail"; no reason contains ": ".
    return str(entry).split(": ", 1)[0]


def _rejected(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return {str(name): _reason_of(value) for name, value in raw.items()}
    if isinstance(raw, list) and all(isinstance(r, dict) and "name" in r for r in raw):
        return {str(r["name"]): _reason_of(r.get("reason", "unknown")) for r in raw}
    raise ManifestError(f"{where}: field 'rejected' is neither a dict nor a list of records")


def _names(record: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = record.get(key) or []
    if not isinstance(value, list):
        raise ManifestError(f"{where}: {key!r} of image {record.get('name')!r} is not a list")
    return [str(name) for name in value]


def parse_manifest(manifest: Any, where: str = "manifest") -> DataVersion:
    """The comparable parts of a manifest (the dict of ``manifest.json``).

    Raises:
        ManifestError: If it is not a dict with a list ``images`` of records holding
            ``name``, ``sha256`` and ``split``, or ``rejected`` has an unknown shape.
    """
    if not isinstance(manifest, dict):
        raise ManifestError(f"{where}: not a JSON object")
    kept: dict[str, tuple[str, str]] = {}
    split_of: dict[str, str] = {}
    copies: dict[str, str] = {}
    for index, record in enumerate(_field(manifest, "images", list, where)):
        at = f"{where}: images[{index}]"
        if not isinstance(record, dict):
            raise ManifestError(f"{at} is not an object")
        name, sha, split = (_field(record, k, str, at) for k in ("name", "sha256", "split"))
        key = record.get("split_key")
        kept[key if isinstance(key, str) else sha] = (name, split)
        split_of[name] = split
        for copy in _names(record, "duplicates", at) + _names(record, "near_duplicates", at):
            split_of[copy] = split
            copies[copy] = name
    data_hash = manifest.get("data_hash")
    counts = {
        k: v
        for k, v in manifest.items()
        if k.startswith("num_")
        and k not in COUNTED_FROM_LISTS
        and isinstance(v, int)
        and not isinstance(v, bool)
    }
    if any("resized_from" in r for r in manifest["images"]):
        counts["resized images"] = sum(bool(r.get("resized_from")) for r in manifest["images"])
    return DataVersion(
        data_hash=data_hash if isinstance(data_hash, str) else None,
        kept=kept,
        split_of=split_of,
        copies=copies,
        rejected=_rejected(manifest.get("rejected"), where),
        counts=counts,
        settings={k: manifest[k] for k in SETTINGS if k in manifest},
    )


def load_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a processed ingest folder, or of a manifest file.

    Raises:
        ManifestError: If the path does not exist, the folder has no ``manifest.json`` or
            the file is not JSON.
    """
    if not path.exists():
        raise ManifestError(f"{path}: no such file or folder")
    file = path / "manifest.json" if path.is_dir() else path
    if not file.is_file():
        raise ManifestError(
            f"{path}: no manifest.json (give the folder the ingest wrote, e.g. "
            "data/processed/raw, or a manifest.json)"
        )
    try:
        manifest = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"{file}: unreadable: {err}") from err
    except json.JSONDecodeError as err:
        raise ManifestError(f"{file}: not JSON ({err.msg} at line {err.lineno})") from err
    if not isinstance(manifest, dict):
        raise ManifestError(f"{file}: not a JSON object")
    return manifest


def _newly_rejected(old: DataVersion, new: DataVersion) -> dict[str, list[str]]:
    by_reason: dict[str, list[str]] = {}
    for name, reason in sorted(new.rejected.items()):
        if old.rejected.get(name) != reason:
            by_reason.setdefault(reason, []).append(name)
    return dict(sorted(by_reason.items()))


def _split_changes(old: DataVersion, new: DataVersion) -> list[dict[str, str]]:
    changes = []
    for key, (new_name, new_split) in sorted(new.kept.items()):
        # The kept file's own split in OLD (kept or a copy there); else the same photo's.
        old_split = old.split_of.get(new_name) or old.kept.get(key, ("", None))[1]
        if old_split is not None and old_split != new_split:
            changes.append(
                {
                    "split_key": key,
                    "name": new_name,
                    "old_split": old_split,
                    "new_split": new_split,
                }
            )
    return changes


def _straddling(old: DataVersion, new: DataVersion) -> list[dict[str, str]]:
    found = []
    for name, kept_name in sorted(new.copies.items()):
        old_split, new_split = old.split_of.get(name), new.split_of[name]
        if old_split is not None and old_split != new_split:
            found.append(
                {
                    "name": name,
                    "kept_as": kept_name,
                    "old_split": old_split,
                    "new_split": new_split,
                }
            )
    return found


def check_rules(diff: DataDiff, old: DataVersion, new: DataVersion) -> list[Rule]:
    """The three documented rules (see the module docstring), each with a one-line detail."""
    n_old, n_new = len(old.kept), len(new.kept)
    drop = (n_old - n_new) / n_old if n_old else 0.0
    kept_moves = diff.split_transitions.get("train -> test", 0)
    copy_moves = sum(
        d["old_split"] == "train" and d["new_split"] == "test" for d in diff.straddling_duplicates
    )
    old_reasons = set(old.rejected.values())
    new_reasons = sorted(set(new.rejected.values()) - old_reasons)
    return [
        Rule(
            f"kept images drop by at most {MAX_KEPT_DROP:.0%}",
            drop <= MAX_KEPT_DROP,
            f"{n_old:,} -> {n_new:,} ({-drop:+.1%})",
        ),
        Rule(
            "no image moves from train to test",
            kept_moves + copy_moves == 0,
            f"{kept_moves} photos, {copy_moves} straddling duplicates",
        ),
        Rule(
            "no new rejection reason",
            not new_reasons,
            ", ".join(new_reasons) if new_reasons else "none",
        ),
    ]


def diff_versions(old: DataVersion, new: DataVersion) -> DataDiff:
    """Compare two parsed manifests and check the rules."""
    changes = _split_changes(old, new)
    count_keys = sorted(old.counts.keys() | new.counts.keys())
    diff = DataDiff(
        old_data_hash=old.data_hash,
        new_data_hash=new.data_hash,
        counts={
            "files": (len(old.files), len(new.files)),
            "kept images": (len(old.kept), len(new.kept)),
            "rejected": (len(old.rejected), len(new.rejected)),
            **{k: (old.counts.get(k), new.counts.get(k)) for k in count_keys},
        },
        settings_changed={
            k: (old.settings.get(k), new.settings.get(k))
            for k in SETTINGS
            if old.settings.get(k) != new.settings.get(k)
        },
        added=sorted(new.files - old.files),
        removed=sorted(old.files - new.files),
        newly_rejected=_newly_rejected(old, new),
        no_longer_rejected=sorted((old.rejected.keys() - new.rejected.keys()) & new.files),
        split_changes=changes,
        split_transitions=dict(
            sorted(Counter(f"{c['old_split']} -> {c['new_split']}" for c in changes).items())
        ),
        straddling_duplicates=_straddling(old, new),
    )
    diff.rules = check_rules(diff, old, new)
    return diff


def diff_paths(old: Path, new: Path) -> DataDiff:
    """``diff_versions`` of two processed ingest folders or manifest files.

    Raises:
        ManifestError: As ``load_manifest`` and ``parse_manifest``, naming the path.
    """
    return diff_versions(
        parse_manifest(load_manifest(old), str(old)), parse_manifest(load_manifest(new), str(new))
    )


def _shown(names: Iterable[str]) -> str:
    listed = list(names)
    more = f" and {len(listed) - SHOWN} more" if len(listed) > SHOWN else ""
    return ", ".join(listed[:SHOWN]) + more


def _change(old: int | None, new: int | None) -> str:
    if old is None or new is None:
        return "-"
    pct = f" ({(new - old) / old:+.1%})" if old else ""
    return f"{new - old:+,}{pct}"


def format_report(diff: DataDiff) -> str:
    """The diff as Markdown: counts, changes, rules, then the names behind each change."""
    cell = "{:,}".format
    lines = [
        f"old data_hash: {diff.old_data_hash}",
        f"new data_hash: {diff.new_data_hash}",
        "",
        "| count | old | new | change |",
        "|---|---:|---:|---:|",
    ]
    for label, (old, new) in diff.counts.items():
        shown = ["-" if v is None else cell(v) for v in (old, new)]
        lines.append(f"| {label} | {shown[0]} | {shown[1]} | {_change(old, new)} |")
    changes = [
        ("files added", diff.added),
        ("files removed", diff.removed),
        *((f"newly rejected: {r}", names) for r, names in diff.newly_rejected.items()),
        ("no longer rejected", diff.no_longer_rejected),
        ("photos whose split changed", [c["name"] for c in diff.split_changes]),
        *(
            (f"split {move}", [c["name"] for c in diff.split_changes if move == _move(c)])
            for move in diff.split_transitions
        ),
        ("duplicates now straddling splits", [d["name"] for d in diff.straddling_duplicates]),
    ]
    lines += ["", "| change | files |", "|---|---:|"]
    lines += [f"| {label} | {len(names):,} |" for label, names in changes]
    lines += ["", "| rule | result | detail |", "|---|---|---|"]
    lines += [f"| {r.name} | {'pass' if r.passed else 'FAIL'} | {r.detail} |" for r in diff.rules]
    for key, (old, new) in diff.settings_changed.items():
        lines.append(f"\nsetting {key} changed: {old} -> {new} (splits are expected to move)")
    details = [(label, names) for label, names in changes if names]
    if details:
        lines.append("")
        lines += [f"- {label}: {_shown(names)}" for label, names in details]
    return "\n".join(lines)


def _move(change: Mapping[str, str]) -> str:
    return f"{change['old_split']} -> {change['new_split']}"


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m vae_cats.data.diff OLD NEW``: 0 when every rule passes, 1 when one fails,
    2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m vae_cats.data.diff",
        description="What changed between two processed ingests (folders or manifest.json).",
    )
    parser.add_argument("old", type=Path, help="the earlier ingest folder or manifest.json")
    parser.add_argument("new", type=Path, help="the later ingest folder or manifest.json")
    parser.add_argument("--json", action="store_true", help="print the whole diff as JSON")
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        diff = diff_paths(args.old, args.new)
    except ManifestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**asdict(diff), "passed": diff.passed}, indent=1))
    else:
        print(format_report(diff))
    return 0 if diff.passed else 1


if __name__ == "__main__":
    sys.exit(main())
