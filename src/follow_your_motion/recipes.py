"""Per-backbone recipes: the settings each model family (and variant) starts from, and which apply to a model.

They live apart from the schema (`config.py`) because they are data with sources (each entry says where its values
come from) and need the backbone registry to tell a model's family and variant; the schema needs neither.
"""

from __future__ import annotations

from .config import TransferConfig


def merge(base: dict, override: dict) -> dict:
    """Recursive dict update: `override` wins, nested sections merge."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# The paper's tuning (rank 128, ~3000 / ~2000 steps) in bf16 with gradient checkpointing, for the real models; each
# family's recipe adds its frames, size, K and sampler.
PAPER_TUNING: dict[str, dict] = {
    "model": {"dtype": "bfloat16"},
    "spatial": {"rank": 128, "steps": 3000, "grad_checkpointing": True, "mixed_precision": "bf16"},
    "motion": {"rank": 128, "steps": 2000, "grad_checkpointing": True, "mixed_precision": "bf16"},
}

# What a variant's 720P checkpoint and its image-to-video sibling share (the RECIPES entries say where from).
WAN21_I2V: dict = {"generate": {"steps": 40, "guidance": 5.0}}
SKYREELS_I2V: dict = {"generate": {"guidance": 5.0}}
SKYREELS_720P: dict = {"video": {"auto_frames": 121, "auto_size": (720, 1280), "fps": 24.0},
                       "motion": {"keep_frames": 7}}

# Per-backbone defaults; a user's explicit settings override them.
RECIPES: dict[str, dict] = {
    # The paper's settings where known (81 frames at 480x832, K=5 latent frames), the release's optimiser (AdamW
    # 1e-4, weight decay 0.1 / 0.5), Wan's sampler defaults. 16 fps: the rate Wan2.1 and Wan2.2-A14B generate at
    # (their releases' sample_fps), so the reference's motion is learnt at the speed the model will play it.
    "wan": merge(PAPER_TUNING, {
        "video": {"auto_frames": 81, "auto_size": (480, 832), "fps": 16.0},
        "motion": {"keep_frames": 5},
        "generate": {"steps": 50, "guidance": 5.0},
    }),
    # Wan2.2-T2V-A14B on top of "wan" (the Wan2.2 release's t2v-A14B config: 40 sampling steps, guidance 4.0 for
    # the high-noise and 3.0 for the low-noise expert, 81 frames; it samples 480P and 720P, the 480P size is kept).
    "wan2.2-t2v-a14b": {"generate": {"steps": 40, "guidance": 4.0, "guidance_2": 3.0}},
    # Wan2.2-TI2V-5B on top of "wan" (the release's ti2v-5B config: 121 frames of 704x1280 at 24 fps, 50 steps,
    # guidance 5.0).
    "wan2.2-ti2v-5b": {"video": {"auto_frames": 121, "auto_size": (704, 1280), "fps": 24.0},
                       "generate": {"steps": 50, "guidance": 5.0}},
    # Wan2.1-I2V-14B on top of "wan" (the Wan2.1 release's i2v-14B config: 40 sampling steps, guidance 5.0).
    "wan2.1-i2v": WAN21_I2V,
    # Wan2.1-I2V-14B-720P on top of "wan" and "wan2.1-i2v": 81 frames of 720x1280 (the Wan2.1 README's command for
    # the 720P checkpoint: --task i2v-14B --size 1280*720).
    "wan2.1-i2v-720p": merge(WAN21_I2V, {"video": {"auto_size": (720, 1280)}}),
    # Wan2.2-I2V-A14B on top of "wan" (the Wan2.2 release's i2v-A14B config: 40 steps, guidance 3.5 for both
    # experts).
    "wan2.2-i2v-a14b": {"generate": {"steps": 40, "guidance": 3.5, "guidance_2": 3.5}},
    # LTX-Video 0.9.x (backbones/ltx.py). bf16: the dtype diffusers' LTX-Video docs recommend. 161 frames of
    # 512x704 at 25 fps: LTXPipeline.__call__'s defaults (num_frames, height, width, frame_rate; the RoPE's time
    # axis assumes the frame rate); 161 frames are 21 latent frames, as Wan's 81, so K = 5 keeps the paper's
    # ratio. Rank, steps and K: the paper's, as for Wan. Training noise levels are shifted by the sampler's
    # shift at this size (LTXBackbone.flow_shift). 50 steps, guidance 3: LTXPipeline.__call__'s defaults.
    "ltx": merge(PAPER_TUNING, {
        "video": {"auto_frames": 161, "auto_size": (512, 704), "fps": 25.0},
        "motion": {"keep_frames": 5},
        "generate": {"steps": 50, "guidance": 3.0},
    }),
    # CogVideoX (backbones/cogvideox.py), for CogVideoX-5B (and 2B). bf16: the model card's precision for 5B.
    # 49 frames of 480x720 at 8 fps: the model cards ("6 seconds, 8 frames per second, 720 x 480") and
    # CogVideoXPipeline.__call__'s defaults (the transformer's sample_frames 49, sample_height/width 60/90 latent
    # cells). 49 frames are 13 latent frames: K = 3 keeps the paper's ratio (5 of Wan's 21). Rank and steps: the
    # paper's, as for Wan. 50 steps, guidance 6: CogVideoXPipeline.__call__'s defaults (num_inference_steps,
    # guidance_scale), as in the model card's example.
    "cogvideox": merge(PAPER_TUNING, {
        "video": {"auto_frames": 49, "auto_size": (480, 720), "fps": 8.0},
        "motion": {"keep_frames": 3},
        "generate": {"steps": 50, "guidance": 6.0},
    }),
    # CogVideoX1.5-5B on top of "cogvideox": 81 frames of 768x1360 at 16 fps (its model card: 1360x768, 16 fps;
    # CogVideoXPipeline's 81-frame default for 1.5); K = 3 of its 11 token frames (a token: two latent frames).
    "cogvideox1.5": {"video": {"auto_frames": 81, "auto_size": (768, 1360), "fps": 16.0}, "motion": {"keep_frames": 3}},
    # HunyuanVideo 1.5 (backbones/hunyuan_video15.py), for the 480p text-to-video checkpoint. bf16: the released
    # weights' dtype. 121 frames: HunyuanVideo15Pipeline.__call__'s default num_frames (5 s at the release's 24 fps);
    # 480x848: the release's 480p size (848x480, a multiple of the VAE's 16). 121 frames are 31 latent frames, so
    # K = 7 keeps the paper's ratio (5 of Wan's 21). Rank and steps: the paper's, as for Wan. 50 steps:
    # HunyuanVideo15Pipeline.__call__'s default num_inference_steps; guidance 6: the release's CFG scale for
    # text-to-video (its guider's guidance_scale). Training noise levels are shifted by the scheduler's `shift`.
    "hunyuan_video15": merge(PAPER_TUNING, {
        "video": {"auto_frames": 121, "auto_size": (480, 848), "fps": 24.0},
        "motion": {"keep_frames": 7},
        "generate": {"steps": 50, "guidance": 6.0},
    }),
    # SkyReels-V2 (backbones/skyreels_v2.py), for the 540P text-to-video checkpoints. bf16: as Wan. 97 frames of
    # 544x960 at 24 fps, guidance 6.0: the SkyworkAI/SkyReels-V2 README's text-to-video command for
    # SkyReels-V2-T2V-14B-540P (--height 544 --width 960 --num_frames 97 --guidance_scale 6.0 --shift 8.0 --fps 24;
    # the shift is set on the sampler, SkyReelsV2Backbone), also SkyReelsV2Pipeline.__call__'s defaults. 50 steps:
    # SkyReelsV2Pipeline.__call__'s default num_inference_steps. 97 frames are 25 latent frames, so K = 6 keeps the
    # paper's ratio (5 of Wan's 21). Rank and steps: the paper's, as for Wan.
    "skyreels_v2": merge(PAPER_TUNING, {
        "video": {"auto_frames": 97, "auto_size": (544, 960), "fps": 24.0},
        "motion": {"keep_frames": 6},
        "generate": {"steps": 50, "guidance": 6.0},
    }),
    # SkyReels-V2 image-to-video on top of "skyreels_v2": guidance 5.0 (SkyReelsV2ImageToVideoPipeline.__call__'s
    # default and diffusers' example, "6.0 for T2V, 5.0 for I2V").
    "skyreels-v2-i2v": SKYREELS_I2V,
    # The 720P checkpoints on top of "skyreels_v2" (and "skyreels-v2-i2v"): 121 frames of 720x1280 at 24 fps, the
    # SkyworkAI/SkyReels-V2 README's model table ("720 * 1280 * 121f") and its --num_frames advice ("121 for
    # 720P"). 121 frames are 31 latent frames, so K = 7 keeps the paper's ratio, as for HunyuanVideo 1.5.
    "skyreels-v2-720p": SKYREELS_720P,
    "skyreels-v2-i2v-720p": merge(SKYREELS_I2V, SKYREELS_720P),
    # Kandinsky 5 T2V Lite (backbones/kandinsky5.py), for the 5-second checkpoints. bf16: diffusers' example's dtype.
    # 121 frames of 512x768 at 24 fps, 50 steps, guidance 5.0: Kandinsky5T2VPipeline.__call__'s defaults and its
    # example (height 512, width 768, num_frames 121, guidance_scale 5.0, exported at fps 24), also the release's
    # ComfyUI workflow ("768x512x121 for 5s"). 121 frames are 31 latent frames, so K = 7 keeps the paper's ratio (5
    # of Wan's 21). Rank and steps: the paper's, as for Wan. Training noise levels are shifted by the scheduler's
    # `shift` (Kandinsky5Backbone.flow_shift).
    "kandinsky5": merge(PAPER_TUNING, {
        "video": {"auto_frames": 121, "auto_size": (512, 768), "fps": 24.0},
        "motion": {"keep_frames": 7},
        "generate": {"steps": 50, "guidance": 5.0},
    }),
    # LTX-2 (backbones/ltx2.py), text- and image-to-video. bf16: diffusers' LTX-2 example's dtype. 121 frames of
    # 512x768 at 24 fps, 30 steps, guidance 3.0: LTX2Pipeline.__call__'s defaults (num_frames where it has no duration
    # head, height, width, frame_rate, num_inference_steps, guidance_scale) and diffusers' example (the same values;
    # the RoPE's time axis assumes the frame rate). 121 frames are 16 latent frames, so K = 4 keeps the paper's ratio
    # (5 of Wan's 21). Rank and steps: the paper's, as for Wan. Training noise levels are shifted by the sampler's
    # shift at this size (LTX2Backbone.flow_shift).
    "ltx2": merge(PAPER_TUNING, {
        "video": {"auto_frames": 121, "auto_size": (512, 768), "fps": 24.0},
        "motion": {"keep_frames": 4},
        "generate": {"steps": 30, "guidance": 3.0},
    }),
    # The embedded ShapesWorld model: 9 frames of 32x32 pixels, seconds per stage on a CPU. It has no frame rate (its
    # training videos have none), so its frames are spread over the whole clip.
    "toy": {
        "video": {"auto_frames": 9, "auto_size": (32, 32)},
        "heads": {"num_queries": 256},
        "spatial": {"rank": 8, "steps": 100, "lr": 1e-3, "checkpoint_every": 50},
        "motion": {"rank": 8, "steps": 600, "lr": 1e-3, "keep_frames": 5, "checkpoint_every": 100},
        "generate": {"steps": 20, "guidance": 3.0},
        # The guidances act on pixels here, not on a VAE's latents: DiTFlow's release rates (0.002 -> 0.001, made for
        # CogVideoX's latents) leave the toy's samples unchanged, ten times them over half the steps moves the
        # object along the reference's path (docs/benchmark.md, "Training-free guidance on the toy model").
        "guidance": {"ditflow": {"lr": (0.02, 0.01), "guided_fraction": 0.5}},
    },
}


def recipe_config(family: str, overrides: dict) -> TransferConfig:
    """The family's recipe with the user's overrides applied."""
    return TransferConfig.model_validate(merge(RECIPES.get(family, {}), overrides))


def model_family(model: dict) -> str:
    """The family of a `model` section: its `family`, or the one its `source` is (None: the toy). A hub id the
    registry refuses by name is refused whatever family is given, before anything is downloaded."""
    family = model.get("family", "auto")
    if model.get("source") is None:
        return "toy" if family == "auto" else family
    from .backbones import detect_family, hub_variant  # read model_index.json and the registry only

    hub_variant(model["source"])
    return detect_family(model["source"]) if family == "auto" else family


def model_recipe(model: dict) -> dict:
    """The recipe of a `model` section: its family's, with its variant's on top (Wan2.2, Wan I2V, CogVideoX1.5)."""
    recipe: dict = {}
    for name in recipe_names(model):
        recipe = merge(recipe, RECIPES.get(name, {}))
    return recipe


def recipe_names(model: dict) -> list[str]:
    """The recipes a `model` section runs with, in the order they apply: its family's, then its variant's."""
    from .backbones import detect_variant

    variant = detect_variant(model["source"]) if model.get("source") is not None else None
    return [model_family(model)] + ([variant] if variant in RECIPES else [])


def describe_choice(cfg: TransferConfig) -> str:
    """One line saying which family and recipe a run uses, printed before any model is loaded."""
    v, g = cfg.video, cfg.generate
    frames, height, width = v.target()
    recipes = " + ".join(recipe_names(cfg.model.model_dump()))
    return (f"model {cfg.model.source}: family {cfg.model.family}, recipe {recipes}"
            f" ({frames} frames of {height}x{width}, {g.steps} sampling steps, guidance {g.guidance})")
