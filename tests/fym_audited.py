"""`fym` exactly as `python -m follow_your_motion.cli` runs it, listing what this process writes into a folder and
how much of the transformers it holds once they are sharded.

    python -m torch.distributed.run --standalone --nproc_per_node 2 fym_audited.py WATCHED RECORD fym-args...

Every file or folder under WATCHED that this process opens for writing, creates, renames or removes (seen through
`sys.addaudithook`: Python's own file operations, which every write of the project goes through, if only to
publish a temporary file by renaming it) is listed in RECORD/writes-rank<RANK>.json when it exits. Each time the
experts get sharded (`shard_experts` on unsharded ones), RECORD/shards-rank<RANK>.json gets [elements this process
holds, elements of the whole] of their weights.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
CHANGES = ("os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.truncate", "shutil.rmtree", "os.symlink", "os.link")


def main(watched: Path, record: Path, args: list[str]) -> None:
    root = os.path.abspath(watched)
    writes: list[str] = []

    def inside(path: object) -> bool:
        if not isinstance(path, (str, bytes, os.PathLike)):
            return False  # a file descriptor
        full = os.path.abspath(os.fsdecode(path))
        return full == root or full.startswith(root + os.sep)

    def hook(event: str, details: tuple) -> None:
        if event == "open":
            path, mode, flags = details
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE_FLAGS)
            if writing and inside(path):
                writes.append(f"open {os.path.relpath(os.fsdecode(path), root)}")
        elif event in CHANGES and inside(details[0]):
            writes.append(f"{event} {os.path.relpath(os.fsdecode(details[0]), root)}")

    from follow_your_motion.backbones.speed import SpeedOptions

    shards: list[list[int]] = []
    shard_experts = SpeedOptions.shard_experts

    def recording_shard_experts(self, device) -> None:
        if self.sharded:  # already sharded: the call does nothing
            return shard_experts(self, device)
        shard_experts(self, device)
        weights = [p for e in self.experts for p in e.module.parameters()]
        local = [p.to_local() if hasattr(p, "to_local") else p for p in weights]  # a DTensor holds its shard
        shards.append([sum(t.numel() for t in local), sum(p.numel() for p in weights)])

    SpeedOptions.shard_experts = recording_shard_experts
    sys.addaudithook(hook)
    sys.argv = ["fym", *args]
    try:
        runpy.run_module("follow_your_motion.cli", run_name="__main__", alter_sys=True)
    finally:
        rank = os.environ.get("RANK", "0")
        (record / f"writes-rank{rank}.json").write_text(json.dumps(writes, indent=1))
        (record / f"shards-rank{rank}.json").write_text(json.dumps(shards))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
