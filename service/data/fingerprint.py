"""What a model was trained on: the data spec, the split sizes and a fingerprint of the training
images. The BL-AE checkpoint records it, so that resuming, encoding and building can refuse to
mix a model with other data instead of silently encoding one data set with another's model."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from service.data.sources import DataSpec, ImageSet, describe
from service.errors import InvalidInputError

# Compared when a record has no fingerprint (a checkpoint from before fingerprints existed:
# its run.json "data" entry is all that is known).
SPEC_KEYS = ("source", "limit", "classes", "train", "test")


def fingerprint(images: ImageSet) -> str:
    """sha256 over the training images (shape, pixels, labels), in their order."""
    train = images.split("train")
    digest = hashlib.sha256(json.dumps(list(train.images.shape)).encode())
    digest.update(np.ascontiguousarray(train.images).data)
    digest.update(np.ascontiguousarray(train.labels, np.int64).data)
    return digest.hexdigest()


def data_record(spec: DataSpec, images: ImageSet) -> dict[str, Any]:
    """The spec, counts and fingerprint, as stored in the checkpoint and run.json."""
    return {**spec.to_dict(), **describe(images), "train_sha256": fingerprint(images)}


def same_data(trained: dict[str, Any], now: dict[str, Any]) -> bool:
    if "train_sha256" in trained:
        return trained["train_sha256"] == now["train_sha256"] and trained["test"] == now["test"]
    # JSON turned tuples into lists: compare both sides in their JSON form.
    return all(json.dumps(trained.get(k)) == json.dumps(_listed(now.get(k))) for k in SPEC_KEYS)


def source_flags(record: dict[str, Any]) -> str:
    """The CLI flags that select this data, e.g. "--source folder:DIGITS --limit 1000"."""
    flags = f"--source {record['source']}"
    if record.get("limit"):
        flags += f" --limit {record['limit']}"
    if record.get("classes"):
        flags += " --classes " + ",".join(map(str, record["classes"]))
    return flags


def summary(record: dict[str, Any]) -> str:
    """e.g. "--source folder:DIGITS --limit 1000 (1000 train / 600 test images)"."""
    return f"{source_flags(record)} ({record['train']} train / {record['test']} test images)"


def check_same_data(
    trained: dict[str, Any] | None, now: dict[str, Any], *, model: str, remedy: str
) -> None:
    """Refuse, in one line that says what to do, when `model` was trained on other data.
    `trained` is None for a model with no record at all: nothing to compare."""
    if trained is None or same_data(trained, now):
        return
    was, now_is = summary(trained), summary(now)
    differs = f"not on {now_is}" if was != now_is else "but those images have changed since"
    raise InvalidInputError(f"{model} was trained on {was}, {differs}: {remedy}")


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
