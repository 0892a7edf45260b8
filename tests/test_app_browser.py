"""`fym app` end to end in Debian's headless Chromium driven by Playwright (nothing is downloaded): upload a bundled
clip under the name ../../x.mp4, run a fast transfer on the toy model, follow its progress, play the result in step
with the reference, download the three files, find the run under "Runs", and save a screenshot.

Set FYM_APP_SCREENSHOT=path to also copy the screenshot there, and FYM_APP_PRESET=paper to run the toy recipe's full
steps instead of the fast preset (docs/images/app.png is made this way, see docs/app.md)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CLIP = Path(__file__).resolve().parents[1] / "examples" / "single-orbit-cw.mp4"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--disable-quic", "--mute-audio",
                 "--autoplay-policy=no-user-gesture-required"]
RUN_NAME = re.compile(r"\d{8}-\d{6}-[0-9a-f]{12}")
PRESET = os.environ.get("FYM_APP_PRESET", "fast")
MOTION_STEPS = {"fast": 60, "paper": 600}[PRESET]  # the toy model's motion steps in each preset
TRANSFER_TIMEOUT_S = 240 if PRESET == "fast" else 900

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="chromium not installed at /usr/bin/chromium (CI installs it: "
                                                      ".ci/run; locally: apt-get install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e .[dev])")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path):
    """`python -m follow_your_motion.app` (what `fym app` runs) in its own process group; (url, runs folder)."""
    runs, port = tmp_path / "runs", free_port()
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "follow_your_motion.app", "--runs", str(runs), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the app did not start:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(0.25)
        yield url, runs
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        print(f"server log: {tmp_path / 'server.log'}")


def video_ready(selector: str) -> str:
    """JS condition: the <video> under `selector` decoded its first frame (a playable source)."""
    return (f"() => {{ const v = document.querySelector('{selector} video'); "
            "return !!v && v.readyState >= 2 && v.videoWidth > 0 && v.duration > 0; }")


def test_fast_transfer_in_headless_chromium(server, tmp_path):
    url, runs = server
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1500}, accept_downloads=True)
            page.goto(url)
            page.get_by_label("Reference caption").wait_for(timeout=60_000)
            for label in ("Reference video", "Reference caption", "Target prompt", "Model", "Preset", "Advanced"):
                sync_api.expect(page.get_by_text(label, exact=True).first).to_be_visible()
            assert page.get_by_text("Image", exact=True).count() == 0  # hidden: no image-to-video model
            assert "Sharing is off" in page.content()

            page.locator("#fym-upload input[type=file]").set_input_files(
                files=[{"name": "../../x.mp4", "mimeType": "video/mp4", "buffer": CLIP.read_bytes()}])
            page.wait_for_function(video_ready("#fym-upload"), timeout=30_000)
            page.get_by_label("Reference caption").fill("a red circle")
            page.get_by_label("Target prompt").fill("a blue square")
            sync_api.expect(page.get_by_label("fast")).to_be_checked()
            page.get_by_label(PRESET).check()
            transfer = page.get_by_role("button", name="Transfer", exact=True)
            transfer.click()
            sync_api.expect(transfer).to_be_disabled()  # one job per page; it is enabled again when the job ends

            seen: set[str] = set()
            status = page.locator("#fym-status")
            deadline = time.monotonic() + TRANSFER_TIMEOUT_S
            while "Done" not in (text := status.inner_text()):
                assert "Error" not in text, text
                assert time.monotonic() < deadline, f"no result after {TRANSFER_TIMEOUT_S} s: {text}"
                seen.add(text)
                time.sleep(0.2)
            progress = [t for t in seen
                        if re.search(rf"Stage: motion · Step: \d+ / {MOTION_STEPS} · about .+ of tuning left", t)]
            assert progress, seen  # stage, step / total and time left were shown while it ran
            for stage in ("spatial", "motion"):  # both loss curves were drawn
                assert page.locator(f"#fym-loss-{stage} canvas, #fym-loss-{stage} svg").count() > 0, stage

            sync_api.expect(transfer).to_be_enabled()
            for side in ("#fym-reference", "#fym-result"):
                page.wait_for_function(video_ready(side), timeout=30_000)
            src = page.locator("#fym-result video").get_attribute("src")
            served = page.request.get(src)
            assert served.ok and served.headers["content-type"] == "video/mp4" and served.body()[4:8] == b"ftyp"

            page.evaluate("document.querySelector('#fym-reference video').play()")
            page.wait_for_function("() => !document.querySelector('#fym-result video').paused", timeout=10_000)
            page.evaluate("document.querySelector('#fym-reference video').pause()")
            page.wait_for_function("() => document.querySelector('#fym-result video').paused", timeout=10_000)

            [run] = [p for p in runs.iterdir() if RUN_NAME.fullmatch(p.name)]
            expected = {"Motion LoRA (diffusers)": run / "export/diffusers/motion_lora_diffusers.safetensors",
                        "Motion LoRA (ComfyUI)": run / "export/comfyui/motion_lora_comfyui.safetensors",
                        "Run config": run / "config.yaml"}
            for label, path in expected.items():
                with page.expect_download(timeout=30_000) as download:
                    page.get_by_role("button", name=label, exact=True).click()
                assert Path(download.value.path()).read_bytes() == path.read_bytes(), label

            assert (run / "input.mp4").read_bytes() == CLIP.read_bytes()  # the app's own name for the upload
            assert [p for p in tmp_path.rglob("x.mp4") if runs / ".gradio" not in p.parents] == []

            page.evaluate("window.scrollTo(0, 0)")
            shot = tmp_path / "app.png"
            page.screenshot(path=str(shot), full_page=True)

            page.get_by_role("tab", name="Runs").click()
            page.wait_for_function(f"() => document.querySelector('#fym-runs')?.innerText.includes('{run.name}')",
                                   timeout=30_000)
            sync_api.expect(page.get_by_label("New motion LoRA scale")).to_have_value("1", timeout=30_000)
            page.get_by_label("New target prompt").fill("a green triangle")
            page.get_by_role("button", name="Generate", exact=True).click()
            regen = page.locator("#fym-regen-status")
            sync_api.expect(regen).to_contain_text("Done", timeout=120_000)
            page.wait_for_function(video_ready("#fym-run-result"), timeout=30_000)
            assert "/app-" in page.locator("#fym-run-result video").get_attribute("src")
            assert len(list((run / "samples").glob("app-*_metrics.json"))) == 1
        finally:
            browser.close()

    image = np.asarray(Image.open(shot).convert("RGB")).astype(np.float64)
    assert image.shape[1] == 1280 and image.std() > 20, "screenshot looks blank"
    print(f"screenshot: {shot}")
    if os.environ.get("FYM_APP_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["FYM_APP_SCREENSHOT"])
