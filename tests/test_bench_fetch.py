"""`fym bench fetch` against a tiny DAVIS-layout archive served on 127.0.0.1, and the shipped MotionBench v1.

No test leaves the loopback interface: the archive is built here and served by http.server in a thread.
"""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from follow_your_motion.bench.fetch import CLIPS, fetch_suite
from follow_your_motion.bench.manifest import load_manifest
from follow_your_motion.bench.manifest_sources import MOTIONBENCH_V1, resolve_manifest
from follow_your_motion.cli import app
from follow_your_motion.video import read_video

FRAMES = {"bear": 6, "dog": 4}  # sequences of the tiny archive and their frame counts
ZIP_NAME = "DAVIS-tiny.zip"


def tiny_davis_zip() -> bytes:
    """A zip in DAVIS's layout (DAVIS/JPEGImages/480p/<seq>/00000.jpg ...) with 24x32 frames, plus masks."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for seq, count in FRAMES.items():
            for t in range(count):
                frame = np.zeros((24, 32, 3), np.uint8)
                frame[8:16, 2 + 4 * t : 10 + 4 * t] = 255  # a square moving right
                archive.writestr(f"DAVIS/JPEGImages/480p/{seq}/{t:05d}.jpg", cv2.imencode(".jpg", frame)[1].tobytes())
                archive.writestr(f"DAVIS/Annotations/480p/{seq}/{t:05d}.png", cv2.imencode(".png", frame)[1].tobytes())
        archive.writestr("DAVIS/ImageSets/2017/val.txt", "\n".join(FRAMES) + "\n")
    return buffer.getvalue()


class ArchiveServer:
    """Serves one file at /<ZIP_NAME> (honouring `Range: bytes=N-`) and records every request's headers."""

    def __init__(self, payload: bytes) -> None:
        self.payload, self.requests = payload, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.requests.append(dict(self.headers))
                if self.path != f"/{ZIP_NAME}":
                    self.send_error(404)
                    return
                start = int(self.headers.get("Range", "bytes=0-")[len("bytes="):].rstrip("-") or 0)
                body = server.payload[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/{len(server.payload)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 5
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{ZIP_NAME}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def payload() -> bytes:
    return tiny_davis_zip()


@pytest.fixture
def server(payload: bytes) -> Iterator[ArchiveServer]:
    served = ArchiveServer(payload)
    yield served
    served.close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 whose port was just released, so nothing listens there."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{ZIP_NAME}"


def write_suite(folder: Path, url: str, sha256: str, clips: dict[str, tuple[str, int, int]] | None = None) -> Path:
    clips = clips or {"walk": ("bear", 1, 5), "sniff": ("dog", 0, 4)}
    cases = [
        {"id": case_id, "category": "single-object", "reference": {"davis": {"sequence": seq, "start": s, "end": e}},
         "caption": f"a {seq}", "targets": ["a cat", "a robot", "a fox"]}
        for case_id, (seq, s, e) in clips.items()
    ]
    source = {"url": url, "sha256": sha256, "frames_dir": "DAVIS/JPEGImages/480p", "fps": 8}
    path = folder / "tiny_suite.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "source": source, "cases": cases}))
    return path


def fym(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_fetch_builds_clips_and_a_runnable_manifest(tmp_path, server, payload):
    suite = write_suite(tmp_path, server.url, hashlib.sha256(payload).hexdigest())
    data = tmp_path / "data"
    result = fym("bench", "fetch", "--suite", suite, "--data", data)
    assert result.exit_code == 0, result.output
    out = Path(result.stdout.strip().splitlines()[-1])
    assert out == data / "tiny_suite.yaml"

    manifest = load_manifest(out)
    walk, sniff = manifest.cases
    assert walk.video == (data / CLIPS / "bear_1-5.mp4").resolve() and walk.tags == ["davis:bear:1-5"]
    assert len(read_video(walk.video).frames) == 4 and len(read_video(sniff.video).frames) == 4
    assert read_video(walk.video).frames.shape[1:] == (24, 32, 3)
    assert (data / ZIP_NAME).read_bytes() == payload and not list(data.glob(".*.part"))
    assert len(server.requests) == 1

    # again: nothing is downloaded, hashed into a new stamp, or rewritten
    before = {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file() and p != out}
    assert fym("bench", "fetch", "--suite", suite, "--data", data).exit_code == 0
    assert len(server.requests) == 1
    assert {p: p.stat().st_mtime_ns for p in before} == before

    # a lost clip comes back from the archive already verified, still without a request
    (data / CLIPS / "dog_0-4.mp4").unlink()
    assert fym("bench", "fetch", "--suite", suite, "--data", data).exit_code == 0
    assert len(server.requests) == 1 and (data / CLIPS / "dog_0-4.mp4").is_file()


def test_checksum_mismatch_names_both_hashes_and_changes_nothing(tmp_path, server, payload):
    wrong = "0" * 64
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("mine")
    result = fym("bench", "fetch", "--suite", write_suite(tmp_path, server.url, wrong), "--data", data)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    error = result.stderr.strip()
    assert len(error.splitlines()) == 1 and "checksum mismatch" in error
    assert wrong in error and hashlib.sha256(payload).hexdigest() in error
    assert files_under(data) == {"notes.txt": b"mine"}  # no archive, no .part, no clips, no manifest


def test_a_wrong_archive_given_by_hand_is_refused_and_kept(tmp_path, payload):
    given = tmp_path / "other.zip"
    given.write_bytes(payload + b"x")
    suite = write_suite(tmp_path, closed_port_url(), hashlib.sha256(payload).hexdigest())
    result = fym("bench", "fetch", "--suite", suite, "--data", tmp_path / "data", "--archive", given)
    assert result.exit_code != 0 and "checksum mismatch" in result.stderr
    assert given.read_bytes() == payload + b"x" and not (tmp_path / "data" / CLIPS).exists()


def test_unreachable_host_says_offline_and_how_to_fetch_by_hand(tmp_path, payload):
    url = closed_port_url()
    suite = write_suite(tmp_path, url, hashlib.sha256(payload).hexdigest())
    result = fym("bench", "fetch", "--suite", suite, "--data", tmp_path / "data")
    assert result.exit_code != 0
    error = result.stderr.strip()
    assert len(error.splitlines()) == 1
    assert f"cannot reach {url.split('/')[2]}" in error and "offline" in error
    assert url in error and "--archive FILE" in error

    by_hand = tmp_path / "downloads" / "davis.zip"  # what the message asks for: the archive passed by hand
    by_hand.parent.mkdir()
    by_hand.write_bytes(payload)
    result = fym("bench", "fetch", "--suite", suite, "--data", tmp_path / "data", "--archive", by_hand)
    assert result.exit_code == 0, result.output
    assert len(load_manifest(tmp_path / "data" / "tiny_suite.yaml").cases) == 2


def test_an_interrupted_download_continues_where_it_stopped(tmp_path, server, payload):
    data = tmp_path / "data"
    data.mkdir()
    half = len(payload) // 2
    (data / f".{ZIP_NAME}.part").write_bytes(payload[:half])
    out = fetch_suite(write_suite(tmp_path, server.url, hashlib.sha256(payload).hexdigest()), data)
    assert server.requests[0]["Range"] == f"bytes={half}-"
    assert (data / ZIP_NAME).read_bytes() == payload and out.is_file()


@pytest.mark.parametrize(("clip", "message"), [
    (("cat", 0, 2), r"case 'walk': .*no sequence 'cat' under DAVIS/JPEGImages/480p/"),
    (("bear", 2, 7), r"case 'walk': .*bear has 6 frames \(0-5\), but the case asks for frames 2-6"),
])
def test_missing_sequence_or_range_out_of_bounds_writes_no_clip(tmp_path, payload, clip, message):
    archive = tmp_path / ZIP_NAME
    archive.write_bytes(payload)
    suite = write_suite(tmp_path, closed_port_url(), hashlib.sha256(payload).hexdigest(),
                        {"sniff": ("dog", 0, 4), "walk": clip})
    with pytest.raises(ValueError, match=message):
        fetch_suite(suite, tmp_path / "data", archive=archive)
    assert not (tmp_path / "data" / CLIPS).exists() and not (tmp_path / "data" / "tiny_suite.yaml").exists()


def write_davis_case(path: Path, davis: dict, source: bool = True, **extra: object) -> Path:
    case = {"id": "a", "category": "human", "reference": {"davis": davis}, "caption": "c", "targets": ["t"], **extra}
    data = {"source": {"url": "http://127.0.0.1/x.zip", "sha256": "a" * 64}} if source else {}
    path.write_text(yaml.safe_dump({**data, "cases": [case]}))
    return path


@pytest.mark.parametrize(("davis", "message"), [
    ({"sequence": "bear", "start": 5, "end": 5}, r"cases\[0\]\.reference\.davis: .*empty frame range"),
    ({"sequence": "Bear Run", "end": 5}, r"cases\[0\]\.reference\.davis\.sequence: String should match"),
    ({"sequence": "bear", "start": -1, "end": 5}, r"cases\[0\]\.reference\.davis\.start: Input should be greater"),
])
def test_bad_davis_reference_names_the_field(tmp_path, davis, message):
    with pytest.raises(ValueError, match=message):
        load_manifest(write_davis_case(tmp_path / "s.yaml", davis))


def test_davis_case_needs_a_source_and_takes_no_tracks(tmp_path):
    clip = {"sequence": "bear", "end": 5}
    assert load_manifest(write_davis_case(tmp_path / "ok.yaml", clip)).cases[0].davis.start == 0
    with pytest.raises(ValueError, match=r"cases\[0\]\.reference: a DAVIS reference needs the manifest's `source`"):
        load_manifest(write_davis_case(tmp_path / "no-source.yaml", clip, source=False))
    with pytest.raises(ValueError, match=r"cases\[0\]: tracks: a DAVIS case has no video yet"):
        load_manifest(write_davis_case(tmp_path / "tracks.yaml", clip, tracks="t.npz"))


# The 90 sequences of DAVIS 2017 trainval (ImageSets/2017/train.txt and val.txt) and their frame counts in
# JPEGImages/480p. The counts sum to 3455 over the 50 DAVIS-2016 sequences and to 6208 over all 90, the totals
# public extraction records give; fetch still checks every range against the real archive.
DAVIS_2017_TRAINVAL = {
    "bear": 82, "bike-packing": 69, "blackswan": 50, "bmx-bumps": 90, "bmx-trees": 80, "boat": 75,
    "boxing-fisheye": 87, "breakdance": 84, "breakdance-flare": 71, "bus": 80, "camel": 90, "car-roundabout": 75,
    "car-shadow": 40, "car-turn": 80, "cat-girl": 89, "classic-car": 63, "color-run": 84, "cows": 104,
    "crossing": 52, "dance-jump": 60, "dance-twirl": 90, "dancing": 62, "disc-jockey": 76, "dog": 60,
    "dog-agility": 25, "dog-gooses": 86, "dogs-jump": 66, "dogs-scale": 83, "drift-chicane": 52,
    "drift-straight": 50, "drift-turn": 64, "drone": 91, "elephant": 80, "flamingo": 80, "goat": 90,
    "gold-fish": 78, "hike": 80, "hockey": 75, "horsejump-high": 50, "horsejump-low": 60, "india": 81, "judo": 34,
    "kid-football": 68, "kite-surf": 50, "kite-walk": 80, "koala": 100, "lab-coat": 47, "lady-running": 65,
    "libby": 49, "lindy-hop": 73, "loading": 50, "longboard": 52, "lucia": 70, "mallard-fly": 70,
    "mallard-water": 80, "mbike-trick": 79, "miami-surf": 70, "motocross-bumps": 60, "motocross-jump": 40,
    "motorbike": 43, "night-race": 46, "paragliding": 70, "paragliding-launch": 80, "parkour": 100, "pigs": 79,
    "planes-water": 38, "rallye": 50, "rhino": 90, "rollerblade": 35, "schoolgirls": 80, "scooter-black": 43,
    "scooter-board": 91, "scooter-gray": 75, "sheep": 68, "shooting": 40, "skate-park": 80, "snowboard": 66,
    "soapbox": 99, "soccerball": 48, "stroller": 91, "stunt": 71, "surf": 55, "swing": 60, "tennis": 70,
    "tractor-sand": 76, "train": 80, "tuk-tuk": 59, "upside-down": 65, "varanus-cage": 67, "walking": 72,
}


def test_shipped_motionbench_v1():
    manifest = load_manifest(MOTIONBENCH_V1)
    assert len(DAVIS_2017_TRAINVAL) == 90 and sum(DAVIS_2017_TRAINVAL.values()) == 6208
    cases = manifest.cases
    assert len(cases) >= 40 and len({c.id for c in cases}) == len(cases)
    per_category = Counter(c.category for c in cases)
    assert set(per_category) == {"camera", "single-object", "multi-object", "human"}
    assert min(per_category.values()) >= 8
    for case in cases:
        clip = case.davis
        assert clip is not None and clip.sequence in DAVIS_2017_TRAINVAL, case.id
        assert 0 <= clip.start < clip.end <= DAVIS_2017_TRAINVAL[clip.sequence], case.id
        assert len(case.targets) == 3 and len(set(case.targets)) == 3 and case.caption not in case.targets
    assert manifest.source.filename == "DAVIS-2017-trainval-480p.zip"
    with pytest.raises(ValueError, match=r"fym bench fetch --suite fym-motionbench-v1"):
        resolve_manifest("fym-motionbench-v1")  # the runner needs the fetched manifest
