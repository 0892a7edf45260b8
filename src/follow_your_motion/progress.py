"""Progress that a person and a log can both read: tqdm's bar on a terminal; anywhere else (a file, a pipe, nohup, a
job scheduler, CI) plain ASCII lines, at most one every `LOG_EVERY_S` seconds plus the first and the last, instead of a
carriage-return refresh per step."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from typing import IO

from tqdm.auto import tqdm

LOG_EVERY_S = 30.0  # a log gets a progress line at most this often (and always the first and the last)


class LineStream:
    """A text stream that turns tqdm's in-place refreshes ("\\r" + status) into one line each."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.fresh = True  # at the start of a line

    def write(self, text: str) -> None:
        for i, part in enumerate(text.split("\r")):
            if i and not self.fresh:
                self.stream.write("\n")
                self.fresh = True
            if part:
                self.stream.write(part)
                self.fresh = part.endswith("\n")

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def bar_options(stream: IO[str] | None = None) -> dict:
    """tqdm's keyword arguments for `stream` (default: the current stderr): none on a terminal; elsewhere lines at
    most every `LOG_EVERY_S` seconds, in ASCII."""
    stream = stream or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return {}
    return {"file": LineStream(stream), "mininterval": LOG_EVERY_S, "ascii": True}


def progress(iterable: Iterable | None = None, **kwargs) -> tqdm:
    """A tqdm bar (same arguments) that writes log lines when stderr is not a terminal. Postfixes set with
    `set_postfix(..., refresh=False)` show on the next line rather than each forcing one."""
    return tqdm(iterable, **(bar_options() | kwargs))


@contextlib.contextmanager
def announced(desc: str) -> Iterator[None]:
    """A one-step bar around a block that has no steps of its own (one encoder pass, a VAE decode): a line when it
    starts and one with its time when it ends."""
    with progress(total=1, desc=desc) as bar:
        yield
        bar.update(1)


@contextlib.contextmanager
def announced_calls(owner: object, name: str, desc: str) -> Iterator[None]:
    """Each call of `owner.<name>` inside the block announced as by `announced`: for a step that runs inside code we
    do not own (the VAE decode inside a diffusers pipeline's call)."""
    original = getattr(owner, name)
    own = name in vars(owner)

    def call(*args, **kwargs):
        with announced(desc):
            return original(*args, **kwargs)

    setattr(owner, name, call)
    try:
        yield
    finally:
        if own:
            setattr(owner, name, original)
        else:
            delattr(owner, name)
