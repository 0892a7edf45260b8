"""Start the page: everything the web layer writes (uploads, its cache) goes inside the runs folder, only the runs
folder is served, and no public share link is ever made."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import InputError
from .uploads import UPLOAD_DIR

MAX_UPLOAD = "2gb"


def serve(runs_dir: Path = Path("runs"), host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serve the app on http://host:port over `runs_dir` until interrupted (`block=False`: return the Gradio app
    running in the background, for tests)."""
    if importlib.util.find_spec("gradio") is None:  # found, not imported: the settings below must come first
        raise InputError("fym app needs Gradio 6: pip install torch==2.13.0 -e '.[app]'")
    runs = Path(runs_dir).expanduser().resolve()
    runs.mkdir(parents=True, exist_ok=True)
    # Before Gradio is imported: its upload cache, examples cache and analytics read these.
    os.environ["GRADIO_TEMP_DIR"] = str(runs / UPLOAD_DIR)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(runs / UPLOAD_DIR / "examples")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from .service import AppService
    from .ui import CSS, SYNC_JS, build_ui, sharing_note

    page = build_ui(AppService(runs), host)
    print(f"Follow-Your-Motion app on http://{host}:{port} over {runs}\n{sharing_note(host).replace('`', '')}",
          flush=True)
    page.queue(default_concurrency_limit=None)
    page.launch(server_name=host, server_port=port, share=False, allowed_paths=[str(runs)], ssr_mode=False,
                show_error=False, max_file_size=MAX_UPLOAD, prevent_thread_lock=not block, quiet=True, head=SYNC_JS,
                css=CSS, pwa=False, mcp_server=False)
    return page
