"""The training data's fingerprint: a resumed run notices changed data.

A method lists what it trains on (`Method.train_listing()`: one
`(key, label_hash)` per training face, e.g. `data.records.training_listing`).
The spine stores `{"count", "sha256"}` of that listing in every checkpoint's
meta item and the listing itself once in `<workdir>/data_listing.json`, so
that a later resume can say what changed, by file. On resume:

  * same fingerprint: nothing to say;
  * different: the difference (files added, removed, relabelled, or the same
    faces in another order; up to `MAX_LISTED` names each) is printed, and the
    run refuses to continue (`DataChangedError`) unless
    `config.resume_may_change` contains `"data_listing"`; allowed, it warns,
    continues, and records the new listing.

Checkpoints written before fingerprints existed have none: the resume then
says so once and records the current listing.

Why refuse: the iterator state in a checkpoint indexes the listing; on other
data the same state continues a different order, and the run is no longer
the one its earlier steps belong to, which is easy to do by accident (a
re-synced data folder, a fixed label file) and invisible afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Optional, Sequence

from training import errors

LISTING_FILE = "data_listing.json"
ALLOW = "data_listing"   # the resume_may_change entry that allows a change.
MAX_LISTED = 10


class DataChangedError(errors.UserError):
  """Resuming on training data that differs from the checkpoint's."""


def fingerprint(listing: Sequence[Sequence[str]]) -> dict:
  """`{"count": n, "sha256": hex}` of an ordered `(key, label_hash)` list."""
  h = hashlib.sha256()
  for key, label in listing:
    h.update(key.encode("utf-8", "surrogateescape"))
    h.update(b"\0")
    h.update(label.encode())
    h.update(b"\n")
  return {"count": len(listing), "sha256": h.hexdigest()}


def write_listing(workdir: str, listing: Sequence[Sequence[str]]) -> None:
  """`<workdir>/data_listing.json`: the listing and its fingerprint."""
  path = os.path.join(workdir, LISTING_FILE)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump({**fingerprint(listing), "items": [list(x) for x in listing]},
              f)
  os.replace(tmp, path)


def read_listing(workdir: str, expected: dict) -> Optional[list]:
  """The stored listing whose fingerprint is `expected`, else None."""
  path = os.path.join(workdir, LISTING_FILE)
  try:
    with open(path) as f:
      stored = json.load(f)
  except (OSError, ValueError):
    return None
  if stored.get("sha256") != expected.get("sha256"):
    return None
  return [tuple(x) for x in stored.get("items", [])]


def describe_difference(old: Optional[Sequence], new: Sequence,
                        old_print: dict) -> str:
  """Which faces were added / removed / relabelled (or only reordered)."""
  new_print = fingerprint(new)
  head = (f"the checkpoint trained on {old_print.get('count')} faces "
          f"(sha256 {str(old_print.get('sha256'))[:12]}), the data now has "
          f"{new_print['count']} (sha256 {new_print['sha256'][:12]})")
  if old is None:
    return head + (" (the checkpoint's listing, data_listing.json, is "
                   "missing or belongs to another checkpoint: no per-file "
                   "difference)")
  a, b = dict(old), dict(new)
  added = sorted(set(b) - set(a))
  removed = sorted(set(a) - set(b))
  relabelled = sorted(k for k in set(a) & set(b) if a[k] != b[k])
  lines = [head]
  for name, keys in (("added", added), ("removed", removed),
                     ("relabelled", relabelled)):
    if keys:
      shown = ", ".join(keys[:MAX_LISTED])
      more = f" and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
      lines.append(f"{len(keys)} {name}: {shown}{more}")
  if not (added or removed or relabelled):
    lines.append("the same faces and labels, in another order")
  return "\n".join(lines)


def check_resume(workdir: str, saved_print: Optional[dict],
                 listing: Optional[Sequence], may_change: Sequence[str],
                 log=print, write: bool = True) -> None:
  """Compares the checkpoint's fingerprint with the current listing.

  Raises DataChangedError when they differ and `ALLOW` is not in
  `may_change`; records the current listing (when `write`: process 0 of a
  multi-host run; every process checks, so all of them stop alike) when the
  resume goes on.
  """
  if listing is None:
    return
  current = fingerprint(listing)
  record = (lambda: write_listing(workdir, listing)) if write else (
      lambda: None)
  if not saved_print:
    log("note: the checkpoint records no training-data fingerprint (written "
        "before fingerprints existed); recording the current data's")
    record()
    return
  if saved_print.get("sha256") == current["sha256"]:
    if read_listing(workdir, current) is None:
      record()
    return
  difference = describe_difference(read_listing(workdir, saved_print),
                                   listing, saved_print)
  if ALLOW not in tuple(may_change):
    raise DataChangedError(
        "the training data differs from the data the checkpoint was "
        "trained on:\n" + difference + "\nPoint the config at the original "
        "data, use a new --workdir, or resume on the new data anyway with "
        f"--config.resume_may_change='(\"{ALLOW}\",)'.")
  log("warning: resuming on changed training data (resume_may_change "
      f"allows {ALLOW}):\n" + difference)
  record()
