"""The app keeps its model between jobs (`app/models.py`): one load for every job on the same model, and each
job computes exactly what a freshly loaded model does."""

from __future__ import annotations

import pytest
import torch
from test_app import finish, loras, request, upload

from follow_your_motion.app.jobs import DONE, FAILED
from follow_your_motion.app.models import ModelCache
from follow_your_motion.app.service import AppService
from follow_your_motion.config import ModelSettings
from follow_your_motion.method.lora import add_masked_lora
from follow_your_motion.run_settings import open_config
from follow_your_motion.transfer import Transfer
from follow_your_motion.video import read_video


def test_jobs_share_one_load_and_match_a_fresh_model_bit_for_bit(tmp_path):
    service = AppService(tmp_path / "runs")
    video = upload(service)
    first = finish(service, service.start_transfer(request(video)))
    second = finish(service, service.start_transfer(request(video, target_prompt="a green triangle")))
    again = finish(service, service.start_generate(first.run_dir.name, "a white square", seed=2))
    assert [j.state for j in (first, second, again)] == [DONE] * 3, [j.message for j in (first, second, again)]
    assert service.models.loads == 1
    assert first.run_dir != second.run_dir
    fresh = Transfer(open_config(second.run_dir), tmp_path / "fresh")  # its own, newly loaded model
    sample = fresh.all()
    ours, theirs = loras(second.run_dir), loras(tmp_path / "fresh")
    for name in ours:
        assert ours[name].keys() == theirs[name].keys()
        assert all(torch.equal(ours[name][k], theirs[name][k]) for k in ours[name]), name
    assert (read_video(second.result["result"]).frames == read_video(sample.paths["video"]).frames).all()


def test_a_lease_ends_without_adapters_even_when_the_job_fails_and_another_model_replaces_it():
    cache = ModelCache()
    toy = ModelSettings()
    with pytest.raises(RuntimeError), cache.lease(toy) as backbone:
        add_masked_lora(backbone.experts[0], "motion", {0: [0]}, rank=2, alpha=2.0)
        assert backbone.loaded_adapters() == {"motion"}
        raise RuntimeError("the job failed")
    assert backbone.loaded_adapters() == set()
    with cache.lease(toy) as same:
        assert same is backbone
    with cache.lease(toy.model_copy(update={"dtype": "bfloat16"})) as other:
        assert other is not backbone
    assert cache.loads == 2


def test_a_failed_job_leaves_the_model_clean_for_the_next(tmp_path):
    service = AppService(tmp_path / "runs")
    video = upload(service)
    bad = finish(service, service.start_transfer(request(video, target_prompt="a blue unicorn")))
    assert bad.state == FAILED
    good = finish(service, service.start_transfer(request(video)))
    assert good.state == DONE and service.models.loads == 1
