from __future__ import annotations

import re
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from follow_your_motion import video
from follow_your_motion.video import (
    VideoClip,
    VideoError,
    from_tensor,
    load_reference,
    read_video,
    resize_center_crop,
    select_frames,
    side_by_side,
    to_tensor,
    write_video,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def gradient(num_frames: int = 9, height: int = 48, width: int = 64) -> np.ndarray:
    """Smooth moving gradient: realistic for lossy codecs, and every frame differs from the others."""
    y, x = np.mgrid[0:height, 0:width]
    frames = [np.stack([(x * 3 + t * 8) % 256, y * 5 % 256, np.full_like(x, t * 25)], -1) for t in range(num_frames)]
    return np.stack(frames).astype(np.uint8)


def indexed(num_frames: int, step: int = 1, height: int = 8, width: int = 8) -> np.ndarray:
    """Frame i is uniformly grey with value i * step, so which frames were picked can be read back."""
    return np.repeat(np.arange(num_frames, dtype=np.uint8) * step, height * width * 3).reshape(
        num_frames, height, width, 3
    )


def picked(frames: np.ndarray, step: int = 1) -> list[int]:
    return [round(float(f.mean()) / step) for f in frames]


def columns(height: int, width: int, colors=(RED, GREEN, BLUE)) -> np.ndarray:
    """One frame split into equal vertical bands of the given colours."""
    frame = np.zeros((1, height, width, 3), np.uint8)
    band = width // len(colors)
    for i, color in enumerate(colors):
        frame[:, :, i * band : (i + 1) * band] = color
    return frame


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def assert_each_frame_matches_its_source(decoded: np.ndarray, source: np.ndarray) -> None:
    """Each decoded frame must be closer to its own source frame than to any other (no drops, no reorder)."""
    for i, frame in enumerate(decoded):
        assert int(np.argmin([mae(frame, s) for s in source])) == i


# --- round trips -------------------------------------------------------------------------------------------


def test_mp4_round_trip(tmp_path):
    frames = gradient()
    out = write_video(tmp_path / "clip.mp4", frames, fps=8)
    assert out == tmp_path / "clip.mp4"
    clip = read_video(out)
    assert clip.frames.dtype == np.uint8 and clip.frames.shape == (9, 48, 64, 3)
    assert clip.fps == 8.0
    # crf 18 + yuv420p measured 1.7 mean / 8 max abs error on this gradient; 3 leaves margin for x264 builds
    assert mae(clip.frames, frames) < 3.0
    assert_each_frame_matches_its_source(clip.frames, frames)


def test_gif_round_trip_keeps_every_frame(tmp_path):
    frames = gradient()
    frames[5] = frames[4]  # identical consecutive frames must not be merged into one longer frame
    clip = read_video(write_video(tmp_path / "clip.gif", frames, fps=10))
    assert clip.frames.shape == (9, 48, 64, 3)
    assert clip.fps == 10.0  # 10 fps = 10/100 s delays, exactly representable in GIF
    # per-frame 256-colour median-cut palette measured 2.3 mean abs error; a fixed rgb8 palette gives ~16
    assert mae(clip.frames, frames) < 4.0
    assert_each_frame_matches_its_source(clip.frames[[0, 1, 2, 3, 4, 6, 7, 8]], frames[[0, 1, 2, 3, 4, 6, 7, 8]])
    assert mae(clip.frames[4], clip.frames[5]) == 0.0


def test_odd_size_mp4_is_padded_by_edge_replication(tmp_path):
    frames = gradient(3, 33, 33)
    clip = read_video(write_video(tmp_path / "tiny.mp4", frames, fps=8))
    assert clip.frames.shape == (3, 34, 34, 3)
    assert mae(clip.frames[:, :33, :33], frames) < 4.0
    assert mae(clip.frames[:, :, 33], clip.frames[:, :, 32]) < 4.0  # replicated column, not black
    assert mae(clip.frames[:, 33], clip.frames[:, 32]) < 4.0


@pytest.mark.skipif("libvpx-vp9" not in av.codecs_available, reason="PyAV build has no VP9 encoder")
def test_webm_round_trip(tmp_path):
    frames = gradient()
    clip = read_video(write_video(tmp_path / "clip.webm", frames, fps=8))
    assert clip.frames.shape == (9, 48, 64, 3) and clip.fps == 8.0
    assert mae(clip.frames, frames) < 4.0  # measured 2.1 with crf 30, realtime deadline
    assert_each_frame_matches_its_source(clip.frames, frames)


@pytest.mark.skipif("mpeg4" not in av.codecs_available, reason="PyAV build has no MPEG-4 encoder")
def test_mov_written_by_pyav_is_readable(tmp_path):
    frames = gradient(6)
    path = tmp_path / "clip.mov"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=12, options={"qscale": "2"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    clip = read_video(path)
    assert clip.frames.shape == (6, 48, 64, 3) and clip.fps == 12.0
    assert_each_frame_matches_its_source(clip.frames, frames)


def test_read_video_max_frames(tmp_path):
    path = write_video(tmp_path / "clip.mp4", indexed(10, step=20, height=16, width=16), fps=8)
    clip = read_video(path, max_frames=4)
    assert picked(clip.frames, 20) == [0, 1, 2, 3]


# --- frame selection ---------------------------------------------------------------------------------------


def test_select_uniform_indices_and_fps():
    clip = VideoClip(indexed(10), fps=10.0)
    four = select_frames(clip, 4)
    assert picked(four.frames) == [0, 3, 6, 9]
    assert four.fps == pytest.approx(10.0 * 3 / 9)  # 4 frames still span the 0.9 s they came from
    assert picked(select_frames(clip, 3).frames) == [0, 5, 9]  # 4.5 rounds half up
    assert picked(select_frames(clip, 4, start=0.2).frames) == [2, 4, 7, 9]
    assert picked(select_frames(clip, 10).frames) == list(range(10))
    assert select_frames(clip, 10).fps == 10.0


def test_select_resamples_to_fps():
    clip = VideoClip(indexed(30), fps=30.0)
    eight = select_frames(clip, 8, fps=8)
    assert picked(eight.frames) == [0, 4, 8, 11, 15, 19, 23, 26]  # nearest to i * 30 / 8
    assert eight.fps == 8.0
    assert picked(select_frames(clip, 4, fps=8, start=0.5).frames) == [15, 19, 23, 26]
    assert picked(select_frames(clip, 3, fps=60).frames) == [0, 1, 1]  # 0.5 frame steps round half up


def test_select_too_few_frames_messages():
    clip = VideoClip(indexed(5), fps=10.0)
    with pytest.raises(VideoError) as err:
        select_frames(clip, 8)
    assert str(err.value) == "clip has 5 frames, but 8 are needed"
    with pytest.raises(VideoError) as err:
        select_frames(clip, 4, start=0.2)
    assert str(err.value) == "clip has 5 frames (3 after 0.2s), but 4 are needed"
    long = VideoClip(indexed(30), fps=30.0)
    with pytest.raises(VideoError) as err:
        select_frames(long, 9, fps=8)  # frame 30 would be needed; the last is 29
    assert str(err.value) == (
        "clip is 1.000s long (30 frames at 30 fps), but 9 frames at 8 fps from 0s need a frame at 1.000s"
    )


@pytest.mark.parametrize("kwargs", [{"num_frames": 0}, {"num_frames": 2, "fps": 0}, {"num_frames": 2, "start": -1}])
def test_select_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        select_frames(VideoClip(indexed(5), fps=10.0), **kwargs)


# --- resizing ------------------------------------------------------------------------------------------------


def test_center_crop_without_scaling_keeps_the_middle():
    out = resize_center_crop(columns(20, 60), 20, 20)
    assert out.shape == (1, 20, 20, 3)
    assert (out == GREEN).all()


def test_shrink_then_crop_keeps_the_middle():
    out = resize_center_crop(np.repeat(columns(40, 120), 2, axis=0), 20, 20)
    assert out.shape == (2, 20, 20, 3)
    assert (out == GREEN).all()  # 2x area averaging inside the green band is exact


def test_tall_frame_is_cropped_vertically():
    out = resize_center_crop(columns(20, 60).transpose(0, 2, 1, 3), 10, 10)
    assert out.shape == (1, 10, 10, 3)
    assert (out == GREEN).all()


def test_enlarge_then_crop():
    out = resize_center_crop(columns(10, 30), 40, 40)  # x4 -> 40x120, keep columns 40..79
    assert out.shape == (1, 40, 40, 3)
    assert (out[:, :, 10:30] == GREEN).all()


def test_resize_keeps_aspect_and_crops_symmetrically():
    frames = gradient(2)  # 48x64 -> scale 0.625 -> 30x40 -> crop 3 rows off top and bottom
    out = resize_center_crop(frames, 24, 40)
    assert out.shape == (2, 24, 40, 3)
    for frame, cropped in zip(frames, out, strict=True):
        assert (cropped == cv2.resize(frame, (40, 30), interpolation=cv2.INTER_AREA)[3:27]).all()


@pytest.mark.parametrize("size", [(0, 10), (10, -1)])
def test_resize_rejects_bad_size(size):
    with pytest.raises(ValueError, match="height and width must be > 0"):
        resize_center_crop(gradient(1), *size)


def test_load_reference(tmp_path):
    path = write_video(tmp_path / "ref.mp4", indexed(20, step=12, height=48, width=64), fps=10)
    clip = load_reference(path, num_frames=4, height=24, width=24)
    assert clip.frames.shape == (4, 24, 24, 3)
    assert picked(clip.frames, 12) == [0, 6, 13, 19]
    assert clip.fps == pytest.approx(10 * 3 / 19)
    clip = load_reference(path, num_frames=4, height=16, width=32, fps=5)
    assert clip.frames.shape == (4, 16, 32, 3) and clip.fps == 5.0
    assert picked(clip.frames, 12) == [0, 2, 4, 6]


def test_load_reference_errors_name_the_file(tmp_path):
    path = write_video(tmp_path / "short.mp4", indexed(20, step=12, height=16, width=16), fps=10)
    with pytest.raises(VideoError) as err:
        load_reference(path, num_frames=30, height=16, width=16)
    assert str(err.value) == f"{path}: clip has 20 frames, but 30 are needed"
    with pytest.raises(VideoError, match=re.escape(str(path))):
        load_reference(path, num_frames=4, height=0, width=16)


# --- bad input -----------------------------------------------------------------------------------------------


def error_for(path: Path, **kwargs) -> str:
    with pytest.raises(VideoError) as err:
        read_video(path, **kwargs)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    return message


def test_missing_file(tmp_path):
    assert error_for(tmp_path / "nope.mp4").endswith("nope.mp4: file not found")


def test_directory(tmp_path):
    (tmp_path / "folder.mp4").mkdir()
    assert "is a directory" in error_for(tmp_path / "folder.mp4")


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    assert "not a readable video" in error_for(path)


def test_truncated_mp4(tmp_path):
    path = write_video(tmp_path / "cut.mp4", gradient(), fps=8)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "not a readable video" in error_for(path)


def test_audio_only_file(tmp_path):
    path = tmp_path / "sound.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        samples.sample_rate = 8000
        container.mux(stream.encode(samples))
        container.mux(stream.encode())
    assert "contains no video stream" in error_for(path)


def test_size_limits_are_checked_before_decoding(tmp_path, monkeypatch):
    path = write_video(tmp_path / "big.mp4", gradient(), fps=8)
    monkeypatch.setattr(video, "MAX_SIDE", 63)
    assert "frame size 64x48 exceeds the 63 pixel limit" in error_for(path)


def test_unknown_write_suffix(tmp_path):
    with pytest.raises(VideoError, match=r"result\.avi: unsupported output format \.avi"):
        write_video(tmp_path / "result.avi", gradient(1), fps=8)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "frames", [gradient(2).astype(np.float32), gradient(2)[..., :2], gradient(2)[0], gradient(2)[:0]]
)
def test_write_rejects_bad_frames(tmp_path, frames):
    with pytest.raises(ValueError, match="frames must"):
        write_video(tmp_path / "out.mp4", frames, fps=8)


@pytest.mark.parametrize("fps", [0, -5, float("nan"), float("inf")])
def test_write_rejects_bad_fps(tmp_path, fps):
    with pytest.raises(ValueError, match="fps must be"):
        write_video(tmp_path / "out.mp4", gradient(2), fps=fps)


# --- atomic writes -------------------------------------------------------------------------------------------


def test_failed_write_keeps_existing_file(tmp_path):
    path = write_video(tmp_path / "out.mp4", gradient(), fps=8)
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_video(path, gradient().astype(np.float32), fps=8)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_failure_while_encoding_removes_temp_file(tmp_path, monkeypatch):
    path = write_video(tmp_path / "out.gif", gradient(), fps=10)
    before = path.read_bytes()
    real, calls = video._palette_frame, []

    def fail_on_third_frame(frame):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(frame)

    monkeypatch.setattr(video, "_palette_frame", fail_on_third_frame)
    with pytest.raises(RuntimeError, match="disk full"):
        write_video(path, gradient(), fps=10)
    assert len(calls) == 3  # the encoder really was part-way through a temp file
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_write_replaces_existing_file_and_creates_parents(tmp_path):
    path = write_video(tmp_path / "a" / "b" / "out.mp4", gradient(4), fps=8)
    assert read_video(path).frames.shape[0] == 4
    write_video(path, gradient(7), fps=8)
    assert read_video(path).frames.shape[0] == 7
    assert list(path.parent.iterdir()) == [path]


# --- comparison and tensors ----------------------------------------------------------------------------------


def test_side_by_side_resizes_right_and_pads_length():
    left = gradient(3, 20, 30)
    right = np.zeros((2, 10, 10, 3), np.uint8)
    right[0], right[1] = RED, BLUE
    out = side_by_side(left, right, gap=4)
    assert out.shape == (3, 20, 30 + 4 + 20, 3)
    assert (out[:, :, :30] == left).all()
    assert (out[:, :, 30:34] == 0).all()
    assert (out[0, :, 34:] == RED).all()
    assert (out[1, :, 34:] == BLUE).all() and (out[2, :, 34:] == BLUE).all()


def test_side_by_side_pads_left_and_keeps_equal_heights():
    left = indexed(2, step=50, height=12, width=8)
    right = gradient(4, 12, 5)
    out = side_by_side(left, right, gap=0)
    assert out.shape == (4, 12, 13, 3)
    assert (out[:, :, 8:] == right).all()
    assert (out[2:, :, :8] == left[1]).all()


def test_tensor_round_trip_is_exact():
    frames = np.random.default_rng(0).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    frames[0, 0, 0] = (0, 128, 255)
    tensor = to_tensor(frames)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 3, 5, 7)
    assert tensor[:, 0, 0, 0].tolist() == pytest.approx([-1.0, 128 / 127.5 - 1, 1.0], abs=1e-6)
    assert tensor[1, 2, 3, 4] == pytest.approx(frames[2, 3, 4, 1] / 127.5 - 1, abs=1e-6)
    assert (from_tensor(tensor) == frames).all()


def test_from_tensor_clamps_and_rounds():
    values = torch.tensor([-3.0, 2.0, 100.4 / 127.5 - 1, 100.6 / 127.5 - 1])
    out = from_tensor(values.view(1, 4, 1, 1).expand(3, 4, 1, 1))
    assert out.dtype == np.uint8 and out.shape == (4, 1, 1, 3)
    assert out[:, 0, 0, 0].tolist() == [0, 255, 100, 101]
    with pytest.raises(ValueError, match=r"\(3, T, H, W\)"):
        from_tensor(torch.zeros(4, 2, 2, 2))


# --- a reference is decoded by window ------------------------------------------------------------------------


def write_long(path: Path, num_frames: int, height: int, width: int, fps: int, keyframe_every: int) -> Path:
    """A clip whose frame i is grey level 2 i (`indexed`), quick to encode at any size (x264 ultrafast)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "0",
                                                                    "g": str(keyframe_every)})
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        for frame in indexed(num_frames, step=2, height=height, width=width):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_probe_counts_frames_without_decoding_them(tmp_path, monkeypatch):
    path = write_long(tmp_path / "long.mp4", 120, 360, 640, fps=30, keyframe_every=12)
    converted = []
    monkeypatch.setattr(video, "_rgb", lambda *a: converted.append(a) or np.zeros((360, 640, 3), np.uint8))
    info = video.probe_video(path)
    assert (info.num_frames, info.fps, info.height, info.width) == (120, 30.0, 360, 640)
    assert converted == []


def test_load_reference_decodes_only_its_window(tmp_path, monkeypatch):
    """A 4 s clip at 640x360: only the 9 frames the window picks are ever converted at full size (the largest
    array a read holds), from a seek to the keyframe before the window, and each is kept at the working size."""
    path = write_long(tmp_path / "long.mp4", 120, 360, 640, fps=30, keyframe_every=12)
    full_size, decoded = [], []
    to_rgb, decode = video._rgb, av.container.InputContainer.decode

    def counting_rgb(frame, info):
        full_size.append(frame.pts)
        return to_rgb(frame, info)

    def counting_decode(self, *args, **kwargs):
        for frame in decode(self, *args, **kwargs):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(video, "_rgb", counting_rgb)
    monkeypatch.setattr(av.container.InputContainer, "decode", counting_decode)
    clip = load_reference(path, num_frames=9, height=24, width=32, fps=15, start=2.0)
    assert clip.frames.shape == (9, 24, 32, 3) and clip.fps == 15.0
    assert picked(clip.frames, 2) == [60, 62, 64, 66, 68, 70, 72, 74, 76]  # 2 s at 30 fps on, every other frame
    assert len(full_size) == 9
    assert len(decoded) <= 76 - 60 + 1 + 12  # from the keyframe at or before frame 60 to frame 76, not the clip


@pytest.mark.parametrize("degrees, turn", [(-90, -1), (90, 1), (180, 2)])
def test_a_phone_clips_display_rotation_is_applied(tmp_path, degrees, turn):
    """Phones store a portrait clip as landscape pictures plus a display matrix: the clip is read as it plays,
    turned, with its displayed size in the probe (a sideways reference would teach a sideways motion)."""
    stored = columns(32, 48)  # red | green | blue, left to right, as stored
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv444p"
        stream.options = {"qp": "0"}
        stream.set_display_rotation(degrees)  # counter-clockwise, as VideoFrame.rotation reads it back
        for _ in range(5):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(stored[0], format="rgb24")))
        container.mux(stream.encode())
    info = video.probe_video(path)
    shown = np.rot90(stored[0], turn)
    assert (info.height, info.width) == shown.shape[:2]
    frames = read_video(path).frames
    assert frames.shape == (5, *shown.shape)
    assert mae(frames[0], shown) < 2
    assert load_reference(path, num_frames=5, height=shown.shape[0], width=shown.shape[1]).frames.shape[1:3] == \
        shown.shape[:2]
