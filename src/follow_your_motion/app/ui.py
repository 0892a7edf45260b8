"""The Gradio page: layout, and handlers that only translate between page values and `AppService` calls.

Bad input (InputError, a file that cannot be read) shows its one-line message in the page; anything else is a bug:
its traceback goes to the server console and the page says "internal error". Labels are the contract with people
and with the browser test: "Reference video", "Reference caption", "Target prompt", "Image", "Model", "Preset",
"Advanced", "Transfer", "Cancel", "Result", the three downloads and "Runs".
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gradio as gr
import pandas as pd

from ..config import GUIDANCE_METHODS
from ..errors import InputError
from ..run_settings import open_config
from ..runs import RunDir
from .jobs import INTERNAL_ERROR
from .runs_index import entry, list_runs, resolve_run
from .scoring import metrics_markdown
from .service import AppService, JobView
from .settings import (
    HEAD_RULES,
    PRESETS,
    ROPE_MODES,
    TOY_MODEL,
    Advanced,
    TransferRequest,
    changed_fields,
    image_to_video,
    preset_fields,
)
from .work import DOWNLOADS

log = logging.getLogger("follow_your_motion.app")
# the Advanced fields the preset fills for the chosen model, in the page's order
PRESET_FIELDS = ("spatial_steps", "motion_steps", "rank", "keep_frames", "rope", "head_rule", "head_alpha",
                 "motion_scale", "spatial_scale", "seed")
POLL_S = 0.5
# One loss plot per tuning stage, each a single line: Gradio's LinePlot keeps the colour categories of its first
# update, so one plot coloured by stage would never draw the motion stage that starts later.
STAGES = ("spatial", "motion")
MAX_PLOT_POINTS = 400  # per stage; longer curves are thinned evenly
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def sharing_note(host: str) -> str:
    """What the page and the console say about who can reach the app."""
    reach = ("only this machine can open it (`--host` to change that)" if host in LOCAL_HOSTS
             else f"anyone who can reach {host} on this port can open it")
    return f"Sharing is off: no public link is made; {reach}."


# Keeps the videos of one `.fym-pair` row in step: play, pause, seek and rate follow whichever one the user touched.
# Media events do not bubble, so one capturing listener on the document sees them all, including videos that
# Gradio creates after the page loaded.
SYNC_JS = """
<script>
(() => {
  const partners = (video) => {
    const row = video.closest(".fym-pair");
    return row ? [...row.querySelectorAll("video")].filter((other) => other !== video) : [];
  };
  const follow = {
    play: (v, o) => { if (o.paused) { o.currentTime = v.currentTime; o.play().catch(() => {}); } },
    pause: (v, o) => { if (!o.paused) o.pause(); },
    seeked: (v, o) => { if (Math.abs(o.currentTime - v.currentTime) > 0.05) o.currentTime = v.currentTime; },
    ratechange: (v, o) => { if (o.playbackRate !== v.playbackRate) o.playbackRate = v.playbackRate; },
  };
  for (const [type, apply] of Object.entries(follow)) {
    document.addEventListener(type, (event) => {
      const video = event.target;
      if (video instanceof HTMLVideoElement) partners(video).forEach((other) => apply(video, other));
    }, true);
  }
})();
</script>
"""
CSS = """
.fym-pair video { image-rendering: pixelated; }
#fym-heads img { image-rendering: pixelated; }
"""


def page_error(err: Exception) -> str:
    """The page's text for an exception raised by a handler."""
    if isinstance(err, (InputError, OSError)):
        return f"**Error:** {err}"
    log.error("internal error in the app", exc_info=err)
    return f"**Error:** {INTERNAL_ERROR}"


def loss_frame(losses: list[tuple[str, int, float]], stage: str) -> pd.DataFrame | None:
    """The (step, loss) curve of one stage, thinned to at most ~MAX_PLOT_POINTS; None before its first step."""
    points = [(step, loss) for name, step, loss in losses if name == stage]
    if not points:
        return None
    return pd.DataFrame(points[:: max(1, len(points) // MAX_PLOT_POINTS)], columns=["step", "loss"])


def default_device() -> str:
    """The device the page offers: the one `--device auto` picks (`devices.pick_device`)."""
    from ..devices import pick_device

    return pick_device()


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def result_updates(result: dict | None) -> list:
    """Values of (results panel, reference, result, heads, metrics, three downloads) for a finished job."""
    if result is None:
        return [gr.update(visible=False), *([gr.skip()] * 7)]
    files = result.get("downloads", {})
    buttons = [gr.update(value=files.get(label), visible=label in files) for label in DOWNLOADS]
    return [gr.update(visible=True), result["reference"], result["result"], result.get("heads"),
            metrics_markdown(result.get("metrics") or {}), *buttons]


def follow(service: AppService, job_id: str | None, render: Callable[[JobView | None], list],
           plots: bool = True) -> Iterator[list]:
    """Yield (status, [one loss plot per stage,] *render(view)) every POLL_S until the job is over; a plot only when
    its curve grew (an empty frame would fix the plot's axes as categories)."""
    shown = dict.fromkeys(STAGES, 0)
    while True:
        view = service.view(job_id)
        if view is None:
            yield [gr.skip(), *([gr.skip()] * len(STAGES) if plots else []), *render(None)]
            return
        curves = []
        for stage in STAGES if plots else ():
            frame = loss_frame(view.losses, stage)
            grew = frame is not None and len(frame) != shown[stage]
            shown[stage] = len(frame) if frame is not None else 0
            curves.append(frame if grew else gr.skip())
        yield [view.text, *curves, *(render(view) if view.finished else render(None))]
        if view.finished:
            return
        time.sleep(POLL_S)


def build_ui(service: AppService, host: str = "127.0.0.1") -> gr.Blocks:
    """The page over `service`'s runs folder (launch it with `serve`, which adds the sync script and CSS)."""
    with gr.Blocks(title="Follow-Your-Motion", analytics_enabled=False, delete_cache=(3600, 86400)) as page:
        gr.Markdown(f"# Follow-Your-Motion\nMotion transfer: the target prompt's subject moves the way the reference "
                    f"moves. Runs folder: `{service.runs_root}`. {sharing_note(host)}")
        with gr.Tab("New transfer"):
            device = transfer_tab(service)
        with gr.Tab("Runs") as tab:
            listing = runs_tab(service, device)
        tab.select(*listing)  # the list is read again whenever the tab is opened, and when the page loads
        page.load(*listing)
    return page


def transfer_tab(service: AppService) -> gr.Textbox:
    """Inputs, progress and results of a new transfer; returns the Device field (the Runs tab uses it too)."""
    examples = service.examples()
    preset_default = preset_fields(TOY_MODEL, "fast")
    job_id = gr.State(None)
    with gr.Row():
        with gr.Column():
            reference = gr.Video(label="Reference video", sources=["upload"], elem_id="fym-upload", height=220)
            example = gr.Dropdown(label="Bundled example", choices=list(examples), value=None,
                                  info="a ShapesWorld clip the toy model knows; fills the caption")
            caption = gr.Textbox(label="Reference caption", placeholder="what the reference shows, e.g. a red circle")
            target = gr.Textbox(label="Target prompt", placeholder="the new content, e.g. a blue square")
            image = gr.Image(label="Image", type="filepath", visible=False)
            model = gr.Dropdown(label="Model", choices=[TOY_MODEL], value=TOY_MODEL, allow_custom_value=True,
                                info="or type a local diffusers directory or a hub id")
            preset = gr.Radio(label="Preset", choices=list(PRESETS), value="fast",
                              info="fast: a quick look; paper: the model family's full recipe")
            with gr.Accordion("Advanced", open=False):
                with gr.Row():
                    spatial_steps = gr.Number(label="Spatial LoRA steps", precision=0, minimum=0,
                                              value=preset_default.spatial_steps, info="set by the preset")
                    motion_steps = gr.Number(label="Motion LoRA steps", precision=0, minimum=0,
                                             value=preset_default.motion_steps, info="set by the preset")
                    rank = gr.Number(label="LoRA rank", precision=0, minimum=1, value=preset_default.rank,
                                     info="both LoRAs")
                    keep = gr.Number(label="Sparse K", precision=0, minimum=0, value=preset_default.keep_frames,
                                     info="latent frames per motion step; 0 = all")
                with gr.Row():
                    rope = gr.Dropdown(label="RoPE mode", choices=list(ROPE_MODES), value=preset_default.rope)
                    rule = gr.Dropdown(label="Head rule", choices=list(HEAD_RULES), value=preset_default.head_rule)
                    alpha = gr.Number(label="Head alpha", value=preset_default.head_alpha,
                                      info="the rule's threshold: alpha, release ratio or relative alpha")
                with gr.Row():
                    motion_scale = gr.Number(label="Motion LoRA scale", value=preset_default.motion_scale)
                    spatial_scale = gr.Number(label="Spatial LoRA scale", value=preset_default.spatial_scale)
                    seed = gr.Number(label="Seed", value=preset_default.seed, precision=0)
                    device = gr.Textbox(label="Device", value=default_device())
            preset_form = [spatial_steps, motion_steps, rank, keep, rope, rule, alpha, motion_scale, spatial_scale,
                           seed]
            with gr.Row():
                go = gr.Button("Transfer", variant="primary")
                stop = gr.Button("Cancel", variant="stop")
        with gr.Column():
            status = gr.Markdown(elem_id="fym-status")
            plots = [gr.LinePlot(x="step", y="loss", label=f"Loss: {stage} LoRA", height=200,
                                 elem_id=f"fym-loss-{stage}") for stage in STAGES]
    with gr.Column(visible=False, elem_id="fym-results") as results:
        with gr.Row(elem_classes=["fym-pair"]):
            shown_reference = gr.Video(label="Reference", elem_id="fym-reference", interactive=False, loop=True,
                                       height=260)
            shown_result = gr.Video(label="Result", elem_id="fym-result", interactive=False, loop=True, height=260)
        with gr.Row():
            heads = gr.Image(label="Head types", elem_id="fym-heads", interactive=False, height=260)
            metrics = gr.Markdown(elem_id="fym-metrics")
        with gr.Row():
            buttons = [gr.DownloadButton(label, elem_id=f"fym-download-{i}") for i, label in enumerate(DOWNLOADS)]

    def pick_example(name: str | None):
        if name not in examples:
            return gr.skip(), gr.skip()
        path, text = examples[name]
        return str(path), text

    def fill_preset(model_name: str | None, preset_name: str):
        try:
            fields = preset_fields(model_name, preset_name)
        except InputError:  # an unusable model: Transfer will say why
            return [gr.skip()] * len(preset_form)
        return [getattr(fields, name) for name in PRESET_FIELDS]

    def start(video, caption_text, target_text, image_file, model_name, preset_name, spatial, motion, rank_v, keep_v,
              rope_v, rule_v, alpha_v, mscale, sscale, seed_v, device_v):
        advanced = Advanced(_int(spatial), _int(motion), _int(rank_v), _int(keep_v), rope_v, rule_v, alpha_v, mscale,
                            sscale, _int(seed_v), device_v)
        with contextlib.suppress(InputError):  # an unusable model: start_transfer says why
            advanced = changed_fields(preset_fields(model_name, preset_name), advanced)  # only what the user changed
        request = TransferRequest(reference=video, caption=caption_text, target_prompt=target_text, model=model_name,
                                  preset=preset_name, image=image_file, advanced=advanced)
        try:
            job = service.start_transfer(request)
        except Exception as err:  # noqa: BLE001 - shown in the page; bugs are logged by page_error
            refused = video is not None and not Path(video).exists()  # deleted: clear it from the page too
            shown = gr.update(value=None) if refused else gr.skip()
            return None, page_error(err), None, None, gr.update(visible=False), shown, gr.update(interactive=True)
        idle = gr.update(visible=False)
        return job.id, service.view(job.id).text, None, None, idle, gr.skip(), gr.update(interactive=False)

    watched = [status, *plots, results, shown_reference, shown_result, heads, metrics, *buttons]

    def watch(jid: str | None):
        """Follow the job, then enable "Transfer" again (one job per page at a time; other pages queue)."""
        for update in follow(service, jid, lambda view: result_updates(view.result if view else None)):
            yield [*update, gr.skip()]
        yield [*[gr.skip()] * len(watched), gr.update(interactive=True)]

    form = [reference, caption, target, image, model, preset, spatial_steps, motion_steps, rank, keep, rope, rule,
            alpha, motion_scale, spatial_scale, seed, device]
    example.change(pick_example, example, [reference, caption])
    model.change(lambda name: gr.update(visible=image_to_video(name)), model, image)
    for trigger in (model, preset):
        trigger.change(fill_preset, [model, preset], preset_form)
    go.click(start, form, [job_id, status, *plots, results, reference, go], concurrency_limit=None).then(
        watch, job_id, [*watched, go], concurrency_limit=None)
    stop.click(lambda jid: service.cancel(jid) and None, job_id, None, concurrency_limit=None)
    return device


def runs_tab(service: AppService, device: gr.Textbox) -> tuple:
    """Every run in the runs folder; re-open one and generate again from its saved LoRAs (no tuning). Returns the
    (function, inputs, outputs) that refresh the list, for the tab and the page to call too."""
    regen_id = gr.State(None)
    refresh = gr.Button("Refresh")
    gallery = gr.Gallery(label="Reference | result of each run (newest sample)", columns=6, fit_columns=False,
                         height=280, preview=False, object_fit="contain")
    table = gr.Dataframe(interactive=False, elem_id="fym-runs",
                         headers=["run", "status", "reference caption", "target prompt", "newest result"])
    picked = gr.Dropdown(label="Run", choices=[], info="re-open a run: generate again from its saved LoRAs")
    with gr.Row(elem_classes=["fym-pair"]):
        run_reference = gr.Video(label="Run reference", elem_id="fym-run-reference", interactive=False, loop=True,
                                 height=220)
        run_result = gr.Video(label="Run result", elem_id="fym-run-result", interactive=False, loop=True, height=220)
    with gr.Row():
        new_prompt = gr.Textbox(label="New target prompt", placeholder="empty: the run's")
        new_seed = gr.Number(label="New seed", precision=0, info="filled in from the run")
        new_motion = gr.Number(label="New motion LoRA scale", info="filled in from the run")
        new_spatial = gr.Number(label="New spatial LoRA scale", info="filled in from the run")
        new_guidance = gr.Dropdown(label="Guidance while sampling", choices=list(GUIDANCE_METHODS), value=None,
                                   info="training-free (docs/method.md 7b); empty: the run's")
    regenerate = gr.Button("Generate")
    regen_status = gr.Markdown(elem_id="fym-regen-status")
    run_metrics = gr.Markdown()
    run_files = gr.File(label="Run files", file_count="multiple", interactive=False)

    def listing():
        runs = list_runs(service.runs_root)
        rows = [[r.name, r.status, r.caption, r.target_prompt, f"{r.result.name} ({r.result_prompt})" if r.result
                 else ""] for r in runs]
        gifs = [(r.result.with_name(r.result.stem + "_side_by_side.gif"), f"{r.name}: {r.result_prompt}")
                for r in runs if r.result]
        names = [r.name for r in runs]
        pictures = [(str(gif), label) for gif, label in gifs if gif.is_file()]
        return pictures, rows, gr.update(choices=names, value=names[0] if names else None)

    def open_run(name: str | None):
        try:
            run_dir = resolve_run(service.runs_root, name)
            generate = open_config(run_dir).generate
        except InputError as err:
            return None, None, page_error(err) if name else "", None, *[gr.skip()] * 3
        found = entry(run_dir)
        files = [str(p) for p in [run_dir / "config.yaml", *RunDir(run_dir).loras("motion")] if p.is_file()]
        return (str(found.reference) if found.reference else None, str(found.result) if found.result else None, "",
                files or None, generate.seed, generate.motion_scale, generate.spatial_scale)

    def start(name, prompt, seed_v, mscale, sscale, device_v, guidance_v):
        try:
            job = service.start_generate(name, prompt, _int(seed_v), mscale, sscale, device_v, guidance_v or None)
        except Exception as err:  # noqa: BLE001 - shown in the page; bugs are logged by page_error
            return None, page_error(err), gr.update(interactive=True)
        return job.id, service.view(job.id).text, gr.update(interactive=False)

    def render(view: JobView | None) -> list:
        if view is None or view.result is None:
            return [gr.skip(), gr.skip()]
        return [view.result["result"], metrics_markdown(view.result.get("metrics") or {})]

    def watch(jid: str | None):
        for update in follow(service, jid, render, plots=False):
            yield [*update, gr.skip()]
        yield [gr.skip()] * 3 + [gr.update(interactive=True)]

    shown = [gallery, table, picked]
    refresh.click(listing, None, shown)
    picked.change(open_run, picked, [run_reference, run_result, regen_status, run_files, new_seed, new_motion,
                                     new_spatial])
    regenerate.click(start, [picked, new_prompt, new_seed, new_motion, new_spatial, device, new_guidance],
                     [regen_id, regen_status, regenerate], concurrency_limit=None).then(
        watch, regen_id, [regen_status, run_result, run_metrics, regenerate], concurrency_limit=None)
    return listing, None, shown
