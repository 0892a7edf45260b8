"""Peak memory of reading a reference, against the clip's length and resolution.

`load_reference` decodes only the window a run tunes on (Wan's recipe: 81 frames at 16 fps, 5.06 s) and resizes
each frame as it is decoded, so its memory should not grow with the clip: this writes clips of growing length and
resolution (x264, a moving gradient) and measures the resident-set peak of `load_reference` at the Wan recipe's
480x832, next to what decoding the whole clip at full size would hold. Each clip is read in a fresh process, so
one read's peak cannot hide another's (`common.peak_memory`, with glibc made to return freed blocks).

    OMP_NUM_THREADS=1 python -m benchmarks.reference_memory
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from .common import markdown_table

CLIPS = [(1280, 720, 10), (1920, 1080, 10), (1920, 1080, 40), (3840, 2160, 10)]  # width, height, seconds
FPS = 30


def write_clip(path: Path, width: int, height: int, seconds: int) -> None:
    """A moving gradient, quick to encode at any size (x264 ultrafast)."""
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"preset": "ultrafast", "g": str(2 * FPS)})
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        for t in range(seconds * FPS):
            frame = np.stack([(x + 8 * t) % 256, (y + 4 * t) % 256, np.full_like(x, t % 256)], -1).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def measure(path: str) -> dict:
    """In this process: the peak resident memory of reading the Wan recipe's window of `path`."""
    from follow_your_motion.video import load_reference, probe_video

    from .common import peak_memory, return_freed_memory

    return_freed_memory()
    info = probe_video(path)
    start = time.perf_counter()
    with peak_memory() as peak:
        clip = load_reference(path, 81, 480, 832, fps=16.0, info=info)
    return {"frames": info.num_frames, "height": info.height, "width": info.width, "window": clip.frames.shape[0],
            "peak_mib": peak.mib, "window_mib": clip.frames.nbytes / 2**20, "seconds": time.perf_counter() - start,
            "whole_clip_mib": info.num_frames * info.height * info.width * 3 / 2**20}


def main(argv: list[str] | None = None) -> dict:
    from .common import write_result

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/reference_memory"))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for width, height, seconds in CLIPS:
            path = Path(tmp) / f"{width}x{height}-{seconds}s.mp4"
            write_clip(path, width, height, seconds)
            call = f"measure({str(path)!r})"
            code = f"import json; from benchmarks.reference_memory import measure; print(json.dumps({call}))"
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            rows.append({"clip": f"{width}x{height}, {seconds} s at {FPS} fps"} | json.loads(out.splitlines()[-1]))
            path.unlink()
    table = markdown_table(
        ["clip", "frames", "decoding it whole (MiB)", "window read (frames at 480x832)", "window (MiB)",
         "peak of the read (MiB)", "read time (s)"],
        [[r["clip"], r["frames"], f"{r['whole_clip_mib']:,.0f}", r["window"], f"{r['window_mib']:.0f}",
          f"{r['peak_mib']:.0f}", f"{r['seconds']:.2f}"] for r in rows])
    result = {"clips": rows}
    write_result(args.out, result, table + "\n", "reference_memory", argv)
    return result


if __name__ == "__main__":
    main()
