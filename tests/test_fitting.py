"""Clips of any length and shape: the frame count and size chosen when the user gives none, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from follow_your_motion.backbones.inputs import VideoGeometry
from follow_your_motion.cli import app
from follow_your_motion.config import TransferConfig, VideoSettings
from follow_your_motion.errors import InputError
from follow_your_motion.fitting import available_frames, fit_frames, fit_size, fit_video, nearest_size
from follow_your_motion.video import VideoClip, VideoInfo, read_video, select_frames, write_video

WAN = VideoGeometry(temporal_stride=4, spatial_stride=8, patch=(1, 2, 2))
TOY = VideoGeometry(temporal_stride=1, spatial_stride=1, patch=(1, 4, 4))
WAN_RECIPE = VideoSettings(auto_frames=81, auto_size=(480, 832))


def clip(frames: int, height: int = 8, width: int = 8, fps: float = 24.0) -> VideoInfo:
    return VideoInfo(frames, fps, height, width)


@pytest.mark.parametrize(("have", "expected"), [(48, 45), (81, 81), (300, 81), (5, 5), (8, 5)])
def test_a_short_clip_uses_the_most_valid_frames_it_has(have, expected):
    frames, note = fit_frames(WAN_RECIPE, clip(have), WAN, "c.mp4")
    assert frames == expected
    assert (note is None) == (have >= 81)
    if note:
        assert note == (f"c.mp4: clip has {have} frames, fewer than the recipe's 81: tuning on {expected} (4k+1); "
                        "--frames N chooses")


def test_too_short_for_motion_is_refused_naming_what_helps():
    with pytest.raises(InputError, match=r"c.mp4: clip has 4 frames, but motion transfer on this model needs at "
                                         r"least 5 \(4k\+1; fewer have no motion to learn\): use a longer clip$"):
        fit_frames(WAN_RECIPE, clip(4), WAN, "c.mp4")
    with pytest.raises(InputError, match=r"clip has 3 frames \(at --fps 12 from --start 1s\).*use a longer clip or a "
                                         r"higher --fps or an earlier --start"):  # 1.25 s at 24 fps
        fit_frames(WAN_RECIPE.model_copy(update={"fps": 12.0, "start": 1.0}), clip(30), WAN, "c.mp4")
    assert fit_frames(VideoSettings(auto_frames=9), clip(2), TOY, "c")[0] == 2  # the toy takes any count >= 2
    with pytest.raises(InputError, match="at least 2 "):
        fit_frames(VideoSettings(auto_frames=9), clip(1), TOY, "c")


def test_frames_asked_for_are_kept_or_refused():
    assert fit_frames(WAN_RECIPE.model_copy(update={"frames": 21}), clip(48), WAN, "c") == (21, None)
    with pytest.raises(InputError, match=r"clip has 48 frames, but --frames \(video.frames\) asks for 81: pass "
                                         r"--frames 45 or fewer"):
        fit_frames(WAN_RECIPE.model_copy(update={"frames": 81}), clip(48), WAN, "c")


@pytest.mark.parametrize("total", [1, 2, 9, 48, 61])
@pytest.mark.parametrize(("src", "fps", "start"), [(24, None, 0.0), (24, None, 0.5), (30, 15, 0.0), (24, 10, 0.3),
                                                   (25, 24, 0.0), (8, 2, 0.0)])
def test_available_frames_is_what_select_frames_can_take(total, src, fps, start):
    c = VideoClip(np.zeros((total, 1, 1, 3), np.uint8), src)
    n = available_frames(c.info, fps, start)
    if n:
        assert len(select_frames(c, n, fps=fps, start=start).frames) == n
    with pytest.raises(ValueError):
        select_frames(c, n + 1, fps=fps, start=start)


@pytest.mark.parametrize(("clip_hw", "expected"), [
    ((1080, 1920), (480, 832)),  # 16:9 landscape: Wan's own size
    ((480, 832), (480, 832)),
    ((1920, 1080), (832, 480)),  # portrait keeps its orientation
    ((512, 512), (624, 624)),  # square: 624^2 is nearest to 480 x 832 pixels
    ((480, 640), (544, 736)),  # 4:3
])
def test_size_keeps_the_clip_shape_at_the_recipe_pixel_count(clip_hw, expected):
    size, note = fit_size(WAN_RECIPE, clip(1, *clip_hw), WAN, "c.mp4")
    assert size == expected
    assert (note is None) == (expected == (480, 832))
    if note:
        assert note == (f"c.mp4: clip is {clip_hw[0]}x{clip_hw[1]} (height x width): tuning at {expected[0]}x"
                        f"{expected[1]}, the recipe's 480x832 pixel count at the clip's shape; --size HxW chooses")
    assert fit_size(WAN_RECIPE.model_copy(update={"height": 64, "width": 32}), clip(1, *clip_hw), WAN, "c")[0] == (
        64, 32)


def test_nearest_size_is_a_valid_size_close_in_area_and_shape():
    for h, w in [(100, 300), (300, 100), (720, 1280), (1000, 999)]:
        height, width = nearest_size(h, w, 480 * 832, 16)
        assert height % 16 == 0 and width % 16 == 0
        assert abs(height * width / (480 * 832) - 1) < 0.1 and abs((width / height) / (w / h) - 1) < 0.1


def test_fit_video_sets_everything_and_validates():
    fitted, notes = fit_video(WAN_RECIPE, clip(48, 1920, 1080), WAN, "c.mp4")
    assert (fitted.frames, fitted.height, fitted.width) == (45, 832, 480) and len(notes) == 2


def test_cli_fits_a_short_portrait_clip_and_says_so(tiny_wan_dir, tmp_path):
    """No frame count or size given: a 7-frame portrait clip is tuned on 5 frames at the recipe's pixel count
    turned upright, each choice said in one line, and recorded in the run's config."""
    ref = write_video(tmp_path / "tall.mp4", np.random.default_rng(0).integers(0, 255, (7, 96, 64, 3), np.uint8), 8)
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"model": {"dtype": "float32"}, "video": {"auto_size": [32, 48]},
                                        "heads": {"num_queries": 16}}))
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["classify", str(ref), "-p", "a robot walks", "-m", str(tiny_wan_dir), "-o",
                                      str(run), "-c", str(settings)])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith(f"note: {ref.resolve()}")]
    assert notes == [
        f"note: {ref.resolve()}: clip plays at 8 fps, slower than the 16 fps asked (video.fps, --fps): tuning on its "
        "own frames, so its motion will play 2x as fast",
        f"note: {ref.resolve()}: clip has 7 frames, fewer than the recipe's 81: tuning on 5 (4k+1); --frames N chooses",
        f"note: {ref.resolve()}: clip is 96x64 (height x width): tuning at 48x32, the recipe's 32x48 pixel count at "
        "the clip's shape; --size HxW chooses",
    ]
    video = TransferConfig.load(run / "config.yaml").video
    assert (video.frames, video.height, video.width) == (5, 48, 32)
    again = CliRunner().invoke(app, ["classify", str(ref), "-p", "a robot walks", "-m", str(tiny_wan_dir), "-o",
                                     str(run), "-c", str(settings)])
    assert again.exit_code == 0, again.output  # the same clip fits the same way: the run is reused


def test_rate_window_and_upscale_notes():
    fitted, notes = fit_video(WAN_RECIPE.model_copy(update={"fps": 16.0}), clip(600, 480, 832, fps=30), WAN, "c")
    assert (fitted.fps, fitted.frames) == (16.0, 81)
    assert notes == ["c: clip is 20.00 s long: tuning on 0.00-5.06 s of it (81 frames at 16 fps); --start S tunes "
                     "on another window, --fps R at another rate"]
    slow = fit_video(WAN_RECIPE.model_copy(update={"fps": 16.0}), clip(90, 480, 832, fps=8), WAN, "c")
    assert slow[0].fps == 8.0  # its own frames, never one repeated
    assert slow[1][0] == ("c: clip plays at 8 fps, slower than the 16 fps asked (video.fps, --fps): tuning on its own "
                          "frames, so its motion will play 2x as fast")
    given = WAN_RECIPE.model_copy(update={"fps": 16.0, "height": 480, "width": 832})
    tiny = fit_video(given, clip(81, 6, 10, fps=16), WAN, "c")[1]
    assert tiny == ["c: clip is 6x10, upscaled 83.2x per side to 480x832: it holds no detail at that size; use a "
                    "larger clip or a smaller --size"]
    assert fit_video(WAN_RECIPE, clip(81, 240, 416, fps=16), WAN, "c")[1] == []  # twice per side: no note


def indexed_clip(path, num_frames: int, fps: float, size: int = 32):
    """Frame i is uniformly grey at level 4 i, so the frames a run took can be read back from its reference.mp4."""
    levels = np.arange(num_frames, dtype=np.uint8) * 4
    return write_video(path, np.repeat(levels, size * size * 3).reshape(num_frames, size, size, 3), fps)


def classify_tiny_wan(tiny_wan_dir, tmp_path, ref, *flags):
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"model": {"dtype": "float32"}, "video": {"frames": 9, "height": 32,
                                                                                  "width": 32},
                                        "heads": {"num_queries": 16}}))
    result = CliRunner().invoke(app, ["classify", str(ref), "-p", "a robot walks", "-m", str(tiny_wan_dir), "-o",
                                      str(tmp_path / "run"), "-c", str(settings), *flags])
    assert result.exit_code == 0, result.output
    return result


def test_cli_cuts_a_long_clip_to_a_window_at_the_model_rate(tiny_wan_dir, tmp_path):
    """Wan generates at 16 fps: 9 frames of a 2 s, 30 fps clip are taken at 16 fps from --start on (not spread
    over the 2 s), the note says which seconds, and the run records the rate."""
    ref = indexed_clip(tmp_path / "long.mp4", 60, 30)
    result = classify_tiny_wan(tiny_wan_dir, tmp_path, ref, "--start", "0.5")
    notes = [line for line in result.stderr.splitlines() if line.startswith(f"note: {ref.resolve()}")]
    assert notes == [f"note: {ref.resolve()}: clip is 2.00 s long: tuning on 0.50-1.06 s of it (9 frames at 16 fps); "
                     "--start S tunes on another window, --fps R at another rate"]
    video = TransferConfig.load(tmp_path / "run" / "config.yaml").video
    assert (video.fps, video.start, video.frames) == (16.0, 0.5, 9)
    seen = read_video(tmp_path / "run" / "reference.mp4").frames
    levels = [float(f.mean()) / 4 for f in seen]  # two lossy encodings lose up to a grey level or three
    assert np.allclose(levels, [15, 17, 19, 21, 23, 24, 26, 28, 30], atol=0.8), levels  # frames (0.5 + k/16) * 30


def test_cli_says_how_much_a_tiny_clip_is_upscaled(tiny_wan_dir, tmp_path):
    ref = indexed_clip(tmp_path / "tiny.mp4", 9, 16, size=8)
    result = classify_tiny_wan(tiny_wan_dir, tmp_path, ref)
    assert (f"note: {ref.resolve()}: clip is 8x8, upscaled 4x per side to 32x32: it holds no detail at that size; "
            "use a larger clip or a smaller --size") in result.stderr.splitlines()
