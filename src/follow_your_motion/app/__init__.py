"""`fym app`: a local web page for motion transfer over a runs folder (Gradio).

The package is split by responsibility: `settings` (form -> config), `uploads` (safe file handling), `jobs` (the
one-at-a-time queue and cancel), `work` (what a job does with `Transfer`), `scoring` (the metrics shown),
`runs_index` (the Runs view), `service` (the operations, without a browser) and `ui` (the Gradio layout). Only
`ui` imports Gradio, so everything else is tested without it.
"""

from __future__ import annotations

from .server import serve

__all__ = ["serve"]
