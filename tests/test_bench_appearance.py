"""Appearance metrics (CLIP text similarity, CLIP / DINO temporal consistency) on tiny random models built offline."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from bench_shard import FakeTransfer, shapes_case
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    BitImageProcessor,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    Dinov2Config,
    Dinov2Model,
    PreTrainedTokenizerFast,
    ViTConfig,
    ViTImageProcessor,
    ViTModel,
)
from typer.testing import CliRunner

from follow_your_motion.bench import runner
from follow_your_motion.bench.manifest import validate_manifest
from follow_your_motion.bench.metrics import (
    consecutive_cosines,
    first_previous_cosines,
    temporal_consistency_clip,
    temporal_consistency_dino,
    text_similarity,
)
from follow_your_motion.bench.metrics.encoders import load_clip, load_dino
from follow_your_motion.bench.report import write_report
from follow_your_motion.bench.score import score_appearance
from follow_your_motion.cli import app
from follow_your_motion.video import write_video

WORDS = ["<pad>", "<bos>", "<unk>", "<eos>", "a", "red", "blue", "circle", "square", "moves", "left", "right"]
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
PROMPT = "a red circle moves right"


def build_clip(path: Path) -> Path:
    """A random CLIP (32 px images, 8 px patches) with a word-level tokenizer and CLIP's image processor."""
    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>",
                                                       special_tokens=[("<bos>", 1), ("<eos>", 3)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                            unk_token="<unk>").save_pretrained(path)
    text = TINY | {"vocab_size": len(WORDS), "max_position_embeddings": 16, "pad_token_id": 0, "bos_token_id": 1,
                   "eos_token_id": 3}
    config = CLIPConfig(text_config=text, vision_config=TINY | {"image_size": 32, "patch_size": 8}, projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def build_dino(path: Path, kind: str) -> Path:
    """A random DINOv2 (BitImageProcessor, as facebook/dinov2-*) or DINO ViT without pooler (as facebook/dino-*)."""
    torch.manual_seed(1)
    if kind == "dinov2":
        Dinov2Model(Dinov2Config(**TINY, image_size=32, patch_size=8)).save_pretrained(path)
        BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    else:
        ViTModel(ViTConfig(**TINY, image_size=32, patch_size=8), add_pooling_layer=False).save_pretrained(path)
        ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("appearance")
    return SimpleNamespace(clip=build_clip(root / "clip"), dinov2=build_dino(root / "dinov2", "dinov2"),
                           vit=build_dino(root / "vit", "vit"))


def noise(frames: int = 6, size: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, size, size + 8, 3), dtype=np.uint8)


def fym(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


# ---------------------------------------------------------------------------------------------- formulas


def test_first_previous_formula_by_hand():
    # unit directions (1, 0), (0.6, 0.8), (0, 1); lengths must not matter
    emb = np.array([[2.0, 0.0], [3.0, 4.0], [0.0, 5.0]])
    # frame 1: first 0.6, previous 0.6; frame 2: first 0, previous 0.8; frame 0 (release): 1 and 1
    np.testing.assert_allclose(first_previous_cosines(emb), [1.0, 0.6, 0.4], atol=1e-12)
    np.testing.assert_allclose(first_previous_cosines(emb, count_first_frame=False), [0.6, 0.4], atol=1e-12)
    np.testing.assert_allclose(consecutive_cosines(emb), [0.6, 0.8], atol=1e-12)

    injected = SimpleNamespace(embed_images=lambda frames: emb, constants={"model": "injected"})
    release = temporal_consistency_dino(noise(3), injected)
    assert release.score == pytest.approx(2 / 3, abs=1e-12)  # ((1 + .6 + 0) / 3 + (1 + .6 + .8) / 3) / 2
    assert release.definition == "det_dino_first_previous" and release.constants["first_frame_counted"] is True
    assert temporal_consistency_dino(noise(3), injected, count_first_frame=False).score == pytest.approx(0.5)
    assert temporal_consistency_clip(noise(3), injected).score == pytest.approx(0.7, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        temporal_consistency_clip(noise(1), injected)
    with pytest.raises(ValueError, match="zero"):
        first_previous_cosines(np.zeros((3, 4)))


# ---------------------------------------------------------------------------------------------- models


@pytest.mark.parametrize("dino_kind", ["dinov2", "vit"])
def test_identical_frames_are_perfectly_consistent(tiny, dino_kind):
    still = np.repeat(noise(1), 5, axis=0)
    for result in (temporal_consistency_clip(still, load_clip(tiny.clip)),
                   temporal_consistency_dino(still, load_dino(getattr(tiny, dino_kind))),
                   temporal_consistency_dino(still, load_dino(getattr(tiny, dino_kind)), count_first_frame=False)):
        assert result.score == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(result.per_frame, 1.0, atol=1e-6)
    moving = temporal_consistency_dino(noise(5), load_dino(getattr(tiny, dino_kind)))
    assert moving.score < 1.0 - 1e-4  # random frames differ
    assert moving.constants["model_type"] == dino_kind and "CLS token" in moving.constants["embedding"]


def test_text_similarity_is_the_models_own_cosine(tiny):
    frames = noise(5)
    result = text_similarity(frames, PROMPT, load_clip(tiny.clip))

    model = CLIPModel.from_pretrained(tiny.clip).eval()
    pixels = AutoImageProcessor.from_pretrained(tiny.clip)(images=list(frames), return_tensors="pt")
    words = AutoTokenizer.from_pretrained(tiny.clip)([PROMPT], return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=words["input_ids"], attention_mask=words["attention_mask"],
                    pixel_values=pixels["pixel_values"])
        cosines = (out.logits_per_image[:, 0] / model.logit_scale.exp()).double().numpy()
    np.testing.assert_allclose(result.per_frame, cosines, atol=1e-6)
    assert result.score == pytest.approx(float(cosines.mean()), abs=1e-6)
    assert result.constants["prompt_tokens"] == 7 and result.constants["prompt_truncated"] is False

    scored = score_appearance(frames, PROMPT, clip=tiny.clip)
    entry = scored["text_similarity"]
    assert entry["score"] == result.score and entry["score_x100"] == 100 * entry["score"]
    assert scored["text_similarity_note"] is None and scored["temporal_consistency_dino"] is None
    assert "--dino PATH" in scored["temporal_consistency_dino_note"]


def test_missing_or_wrong_model_is_a_clear_error(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"CLIP model .*nope.* not found.*--clip PATH"):
        load_clip(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"DINO model 'nobody/no-such-dino' not found.*--dino PATH"):
        load_dino("nobody/no-such-dino")
    with pytest.raises(ValueError, match=r"is a 'clip' model; --dino needs one of: dinov2, vit"):
        load_dino(tiny.clip)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text((tiny.clip / "config.json").read_text())
    with pytest.raises(ValueError, match=r"has no tokenizer"):
        load_clip(tmp_path / "half")


# ---------------------------------------------------------------------------------------------- fym metrics


def test_cli_metrics_with_and_without_models(tiny, tmp_path):
    ref = write_video(tmp_path / "ref.mp4", noise(6, 32), fps=8)
    out = write_video(tmp_path / "out.mp4", noise(6, 32, seed=1), fps=8)

    plain = fym("metrics", ref, out, "--prompt", PROMPT)
    assert plain.exit_code == 0, plain.output
    scores = json.loads(plain.stdout)
    for key, option in (("text_similarity", "--clip"), ("temporal_consistency_clip", "--clip"),
                        ("temporal_consistency_dino", "--dino")):
        assert scores[key] is None and "not computed" in scores[f"{key}_note"] and option in scores[f"{key}_note"]

    full = fym("metrics", ref, out, "--prompt", PROMPT, "--clip", tiny.clip, "--dino", tiny.dinov2)
    assert full.exit_code == 0, full.output
    scores = json.loads(full.stdout)
    text = scores["text_similarity"]
    assert -1 <= text["score"] <= 1 and text["score_x100"] == 100 * text["score"]
    assert text["constants"]["model"] == str(tiny.clip) and text["constants"]["image_processor"]["crop_size"]
    assert scores["temporal_consistency_clip"]["definition"] == "clip_consecutive_frames"
    assert scores["temporal_consistency_dino"]["constants"]["model"] == str(tiny.dinov2)
    assert all(scores[f"{k}_note"] is None for k in ("text_similarity", "temporal_consistency_dino"))
    assert scores["motion_fidelity_det"]["definition"] == "det"

    missing = fym("metrics", ref, out, "--prompt", PROMPT, "--clip", tmp_path / "nope")
    assert missing.exit_code == 2 and "error: CLIP model" in missing.stderr and "Traceback" not in missing.output


# ---------------------------------------------------------------------------------------------- bench run


def test_bench_run_records_appearance_metrics(tiny, tmp_path, monkeypatch):
    manifest = validate_manifest({"cases": [shapes_case("orbit", "red", "circle", "orbit-cw", ["a blue square"])]},
                                 "one case")
    out = tmp_path / "bench"
    monkeypatch.setattr(runner, "run_transfer", FakeTransfer())
    results = runner.run_suite(manifest, ["fym", "base"], out, clip=str(tiny.clip), dino=str(tiny.vit))
    records = {r["method"]: r for r in map(json.loads, results.read_text().splitlines())}
    for record in records.values():
        metrics = record["metrics"]
        assert metrics["text_similarity_x100"] == 100 * metrics["text_similarity"]
        assert record["constants"]["temporal_consistency_dino"]["model"] == str(tiny.vit)
        assert record["metric_errors"] == {}
    base = records["base"]["metrics"]  # the fake "base" result stands still
    assert base["temporal_consistency_clip"] == pytest.approx(1.0, abs=1e-6)
    assert base["temporal_consistency_dino"] == pytest.approx(1.0, abs=1e-6)
    assert records["fym"]["metrics"]["temporal_consistency_dino"] < 1.0

    write_report(out)
    table = (out / "results.md").read_text()
    assert "temporal_consistency_dino" in table and "text_similarity |" in table and "x100" not in table
    assert "metrics.text_similarity_x100" in (out / "results.csv").read_text().splitlines()[0]

    with pytest.raises(ValueError, match="scored with appearance metrics: text_similarity"):
        runner.run_suite(manifest, ["fym", "base"], out)


def test_both_clip_metrics_share_one_pass_over_the_frames(tiny, monkeypatch):
    clip = load_clip(tiny.clip)
    frames = noise(5)
    alone = (text_similarity(frames, PROMPT, clip).score, temporal_consistency_clip(frames, clip).score)
    calls = []
    original = type(clip).embed_images
    monkeypatch.setattr(type(clip), "embed_images", lambda self, f: calls.append(len(f)) or original(self, f))
    scored = score_appearance(frames, PROMPT, clip=tiny.clip)
    assert calls == [5]
    assert (scored["text_similarity"]["score"], scored["temporal_consistency_clip"]["score"]) == alone
    one = score_appearance(noise(1), PROMPT, clip=tiny.clip, record_errors=True)  # too short for consistency only
    assert one["text_similarity"] is not None and "at least 2" in one["temporal_consistency_clip_note"]
