"""Every model variant this project knows by name: its diffusers pipeline class, its family, its recipe and its
hub ids, and whether it runs here or is refused (and why).

One table, so a hub id is identified before anything is downloaded (an unknown one is refused, naming `--family`),
and `fym plan` finds each supported variant's published configs (`published/<name>/`, see its README).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PUBLISHED = Path(__file__).parent / "published"  # each supported variant's configs, as its hub repository holds them


@dataclass(frozen=True)
class Variant:
    name: str  # e.g. "wan2.1-t2v-14b": also the folder of its published configs
    family: str  # the backbone file that runs it (wan, ltx, cogvideox, hunyuan_video15, skyreels_v2,
    # kandinsky5, ltx2)
    pipeline: str  # its diffusers pipeline class (model_index.json "_class_name")
    hub_ids: tuple[str, ...] = ()
    recipe: str | None = None  # a recipe on top of the family's (recipes.RECIPES); None: the family's alone
    refused: str | None = None  # why it does not run here; None: supported

    @property
    def configs(self) -> Path | None:
        """The folder of its published configs, where they ship with the package."""
        folder = PUBLISHED / self.name
        return folder if (folder / "model_index.json").is_file() else None


def _both(name: str) -> tuple[str, str]:
    """A CogVideoX repository under its old (THUDM) and its new (zai-org) organisation."""
    return f"THUDM/{name}", f"zai-org/{name}"


VARIANTS: tuple[Variant, ...] = (
    Variant("wan2.1-t2v-1.3b", "wan", "WanPipeline", ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers",)),
    Variant("wan2.1-t2v-14b", "wan", "WanPipeline", ("Wan-AI/Wan2.1-T2V-14B-Diffusers",)),
    Variant("wan2.2-t2v-a14b", "wan", "WanPipeline", ("Wan-AI/Wan2.2-T2V-A14B-Diffusers",), "wan2.2-t2v-a14b"),
    Variant("wan2.2-ti2v-5b", "wan", "WanPipeline", ("Wan-AI/Wan2.2-TI2V-5B-Diffusers",), "wan2.2-ti2v-5b"),
    Variant("wan2.1-i2v-14b-480p", "wan", "WanImageToVideoPipeline", ("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",),
            "wan2.1-i2v"),
    Variant("wan2.1-i2v-14b-720p", "wan", "WanImageToVideoPipeline", ("Wan-AI/Wan2.1-I2V-14B-720P-Diffusers",),
            "wan2.1-i2v-720p"),
    Variant("wan2.2-i2v-a14b", "wan", "WanImageToVideoPipeline", ("Wan-AI/Wan2.2-I2V-A14B-Diffusers",),
            "wan2.2-i2v-a14b"),
    Variant("ltx-video-0.9", "ltx", "LTXPipeline", ("Lightricks/LTX-Video",)),
    Variant("ltx-video-0.9.1", "ltx", "LTXPipeline", ("Lightricks/LTX-Video-0.9.1",)),
    Variant("ltx-video-0.9.5", "ltx", "LTXPipeline", ("Lightricks/LTX-Video-0.9.5",)),
    Variant("cogvideox-2b", "cogvideox", "CogVideoXPipeline", _both("CogVideoX-2b")),
    Variant("cogvideox-5b", "cogvideox", "CogVideoXPipeline", _both("CogVideoX-5b")),
    Variant("cogvideox1.5-5b", "cogvideox", "CogVideoXPipeline", _both("CogVideoX1.5-5B"), "cogvideox1.5"),
    Variant("hunyuanvideo1.5-480p-t2v", "hunyuan_video15", "HunyuanVideo15Pipeline",
            ("hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v",)),
    Variant("hunyuanvideo1.5-720p-t2v", "hunyuan_video15", "HunyuanVideo15Pipeline",
            ("hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-720p_t2v",)),
    Variant("skyreels-v2-t2v-14b-540p", "skyreels_v2", "SkyReelsV2Pipeline",
            ("Skywork/SkyReels-V2-T2V-14B-540P-Diffusers",)),
    Variant("skyreels-v2-t2v-14b-720p", "skyreels_v2", "SkyReelsV2Pipeline",
            ("Skywork/SkyReels-V2-T2V-14B-720P-Diffusers",), "skyreels-v2-720p"),
    # one variant per size: a plan of the 14B ones must not take the 1.3B's configs
    *(Variant(f"skyreels-v2-i2v-{size.lower()}", "skyreels_v2", "SkyReelsV2ImageToVideoPipeline",
              (f"Skywork/SkyReels-V2-I2V-{size}-Diffusers",),
              "skyreels-v2-i2v-720p" if size.endswith("720P") else "skyreels-v2-i2v")
      for size in ("1.3B-540P", "14B-540P", "14B-720P")),
    # Kandinsky 5 T2V Lite, 5-second checkpoints with regular attention: the ids diffusers' Kandinsky5T2VPipeline
    # example loads (kandinskylab/) and the earlier organisation's (ai-forever/, as diffusers' docs and other tools'
    # examples name them; the hub itself was not reachable from here). The 10-second checkpoints use NABLA sparse
    # attention: refused at load.
    Variant("kandinsky5-t2v-lite-5s", "kandinsky5", "Kandinsky5T2VPipeline",
            tuple(f"{org}/Kandinsky-5.0-T2V-Lite-{kind}-5s-Diffusers" for org in ("kandinskylab", "ai-forever")
                  for kind in ("sft", "nocfg", "distilled16steps", "pretrain"))),
    # LTX-2 (19B audio-video): the hub repository holds the diffusers pipeline (LTX2Pipeline in its model_index.json,
    # as diffusers' LTX-2 docs load it; its layout from refs/pr/3 on is not verified from here). The same checkpoint
    # animates a picture through LTX2ImageToVideoPipeline; a directory saved as that pipeline is the I2V variant.
    Variant("ltx-2", "ltx2", "LTX2Pipeline", ("Lightricks/LTX-2",)),
    Variant("ltx-2-i2v", "ltx2", "LTX2ImageToVideoPipeline"),
    # refused by name: never loaded as another variant
    Variant("wan2.1-vace", "wan", "WanVACEPipeline",
            ("Wan-AI/Wan2.1-VACE-1.3B-diffusers", "Wan-AI/Wan2.1-VACE-14B-diffusers"), refused="Wan VACE"),
    Variant("wan2.2-animate", "wan", "WanAnimatePipeline", ("Wan-AI/Wan2.2-Animate-14B-Diffusers",),
            refused="Wan Animate"),
    Variant("wan-v2v", "wan", "WanVideoToVideoPipeline", refused="Wan video-to-video"),
    Variant("ltx-video-i2v", "ltx", "LTXImageToVideoPipeline", refused="LTX-Video image-to-video"),
    Variant("ltx-video-0.9.7", "ltx", "LTXConditionPipeline",
            ("Lightricks/LTX-Video-0.9.7-dev", "Lightricks/LTX-Video-0.9.7-distilled"),
            refused="LTX-Video conditioning (0.9.7, 13B)"),
    Variant("cogvideox-i2v", "cogvideox", "CogVideoXImageToVideoPipeline",
            (*_both("CogVideoX-5b-I2V"), *_both("CogVideoX1.5-5B-I2V")), refused="CogVideoX image-to-video"),
    Variant("cogvideox-v2v", "cogvideox", "CogVideoXVideoToVideoPipeline", refused="CogVideoX video-to-video"),
    Variant("cogvideox-fun-control", "cogvideox", "CogVideoXFunControlPipeline", refused="CogVideoX Fun control"),
    Variant("hunyuanvideo1.5-i2v", "hunyuan_video15", "HunyuanVideo15ImageToVideoPipeline",
            ("hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_i2v",
             "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-720p_i2v"),
            refused="HunyuanVideo 1.5 image-to-video"),
    Variant("hunyuanvideo1.0", "hunyuan_video", "HunyuanVideoPipeline", ("hunyuanvideo-community/HunyuanVideo",),
            refused="HunyuanVideo 1.0"),
    Variant("skyreels-v2-df", "skyreels_v2", "SkyReelsV2DiffusionForcingPipeline",
            tuple(f"Skywork/SkyReels-V2-DF-{size}-Diffusers" for size in ("1.3B-540P", "14B-540P", "14B-720P")),
            refused="SkyReels-V2 diffusion-forcing"),
    Variant("skyreels-v2-df-i2v", "skyreels_v2", "SkyReelsV2DiffusionForcingImageToVideoPipeline",
            refused="SkyReels-V2 diffusion-forcing image-to-video"),
    Variant("skyreels-v2-df-v2v", "skyreels_v2", "SkyReelsV2DiffusionForcingVideoToVideoPipeline",
            refused="SkyReels-V2 diffusion-forcing video-to-video"),
    Variant("kandinsky5-i2v", "kandinsky5", "Kandinsky5I2VPipeline", refused="Kandinsky 5 image-to-video"),
    Variant("kandinsky5-t2i", "kandinsky5", "Kandinsky5T2IPipeline", refused="Kandinsky 5 text-to-image"),
    Variant("kandinsky5-i2i", "kandinsky5", "Kandinsky5I2IPipeline", refused="Kandinsky 5 image editing"),
    Variant("ltx-2-condition", "ltx2", "LTX2ConditionPipeline", refused="LTX-2 conditioning (keyframes, video)"),
    Variant("ltx-2-ic-lora", "ltx2", "LTX2InContextPipeline", refused="LTX-2 in-context (IC-LoRA)"),
    Variant("ltx-2-dfr", "ltx2", "LTX2DFRPipeline", refused="LTX-2 DFR"),
    Variant("ltx-2-dfr-refine", "ltx2", "LTX2DFRTemporalRefinePipeline", refused="LTX-2 DFR temporal refinement"),
    Variant("ltx-2-hdr", "ltx2", "LTX2HDRPipeline", refused="LTX-2 HDR"),
    Variant("ltx-2-latent-upsample", "ltx2", "LTX2LatentUpsamplePipeline", refused="LTX-2 latent upsampling"),
    Variant("ltx-2-diffusion-decode", "ltx2", "LTX2VideoDiffusionDecodePipeline",
            refused="LTX-2 diffusion decoding"),
)

# the families a checkpoint can be run as (`--family`)
FAMILIES = ("wan", "ltx", "cogvideox", "hunyuan_video15", "skyreels_v2", "kandinsky5", "ltx2")
BY_HUB_ID = {hub_id: v for v in VARIANTS for hub_id in v.hub_ids}
BY_NAME = {v.name: v for v in VARIANTS}


def supported() -> list[Variant]:
    return [v for v in VARIANTS if v.refused is None]
