"""The app on a model with two experts (Wan2.2-A14B): a finished run is seen as tuned and both LoRAs download."""

from __future__ import annotations

import zipfile

from test_app import finish, request, upload
from tiny_wan import build_tiny_wan_pipeline

from follow_your_motion.app.jobs import DONE
from follow_your_motion.app.runs_index import run_status
from follow_your_motion.app.service import AppService
from follow_your_motion.app.work import tuning_finished
from follow_your_motion.run_settings import open_config
from follow_your_motion.runs import RunDir

TINY_A14B = {"model": {"dtype": "float32"}, "video": {"frames": 9, "height": 32, "width": 32},
             "heads": {"num_queries": 16}, "spatial": {"steps": 1, "rank": 2}, "motion": {"steps": 2, "rank": 2},
             "generate": {"steps": 2}}


def test_two_expert_run_is_tuned_and_downloads_both_loras(tmp_path):
    model = str(build_tiny_wan_pipeline(tmp_path / "a14b", boundary_ratio=0.875))
    service = AppService(tmp_path / "runs")
    job = finish(service, service.start_transfer(request(upload(service), model=model, caption="a robot walks",
                                                         target_prompt="a dog runs", extra=TINY_A14B)))
    assert job.state == DONE, job.snapshot()
    run = RunDir(job.run_dir)
    assert [p.name for p in run.loras("motion")] == ["motion_lora_high_noise.safetensors",
                                                     "motion_lora_low_noise.safetensors"]
    assert run.stage_finished("motion") and tuning_finished(open_config(job.run_dir), run)
    assert run_status(job.run_dir) == "tuned"
    downloads = job.result["downloads"]
    for fmt in ("diffusers", "ComfyUI"):
        with zipfile.ZipFile(downloads[f"Motion LoRA ({fmt})"]) as archive:
            assert sorted(archive.namelist()) == [f"motion_lora_{e}_{fmt.lower()}.safetensors"
                                                  for e in ("high_noise", "low_noise")]
    # a stage that has started on the second expert but not written its file is not finished
    (job.run_dir / "checkpoints" / "motion_low_noise").mkdir(exist_ok=True)
    (job.run_dir / "motion_lora_low_noise.safetensors").unlink()
    assert not run.stage_finished("motion") and run_status(job.run_dir) != "tuned"
