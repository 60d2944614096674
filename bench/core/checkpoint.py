"""Checkpoints of a training stack: everything needed to continue exactly where it stopped.

A checkpoint holds the parameters, the optimizer's state, the method's own state (the
temporal ensemble Z, its targets and the outputs of the epoch so far), every random
generator's state (batch order, noise, dropout), the position in the epoch (its
permutation and the next step), the loss sums so far and the curves. Resuming from it
on the same device gives the same record as a run left alone.

Files are written atomically (a temporary file in the same folder, then a rename), so a
crash while writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from sslbench.bench.errors import Interrupted as Interrupted  # re-exported: its old home
from sslbench.bench.errors import UserError

CHECKPOINT_VERSION = 1


@dataclass
class CheckpointPolicy:
    """Where and when a training stack saves its state.

    every_epochs: save after every N finished epochs (0: only when stopped).
    stop: set (by a signal handler) to save at the next step boundary and stop.
    """

    path: Path
    every_epochs: int = 1
    stop: threading.Event = field(default_factory=threading.Event)


def save(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file beside `path`, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
    os.close(handle)
    try:
        torch.save({"version": CHECKPOINT_VERSION, **state}, temporary)
        os.replace(temporary, path)
    except (OSError, RuntimeError) as error:  # a full disk: torch reports it as RuntimeError
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0][:120]
        raise UserError(f"cannot write checkpoint {path}: {reason}; free space in "
                        f"{path.parent} or pass another checkpoint folder, then run the "
                        f"same command again") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def load(path: Path, run_id: str, seeds: list[int], device: torch.device) -> dict[str, Any] | None:
    """The checkpoint at `path` if there is one; an error if it belongs to another run."""
    if not path.exists():
        return None
    try:
        # weights_only: tensors and plain containers only. A checkpoint sits in a folder a
        # user (or anyone who can write there) may replace; a pickle must never run code.
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:
        raise UserError(f"checkpoint {path} cannot be read as a checkpoint "
                        f"({type(error).__name__}: it is corrupt, or holds more than tensors "
                        f"and plain values); delete it to start the run afresh") from None
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} is not a checkpoint; delete it to start afresh")
    if state.get("version") != CHECKPOINT_VERSION:
        raise UserError(f"checkpoint {path} has format version {state.get('version')}, "
                        f"expected {CHECKPOINT_VERSION}; delete it to start afresh")
    if state["run_id"] != run_id or list(state["seeds"]) != list(seeds):
        raise UserError(f"checkpoint {path} belongs to run {state['run_id']} (seeds "
                        f"{state['seeds']}), not to run {run_id} (seeds {seeds}); "
                        f"use another --checkpoint path or delete it")
    return state


class Settable(Protocol):
    """A threading or multiprocessing Event."""

    def set(self) -> None: ...


@contextlib.contextmanager
def stop_on_signals(stop: Settable) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT set `stop` (the loop then saves and stops).

    Only the main thread can install handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def request_stop(signum: int, frame: Any) -> None:
        del signum, frame
        stop.set()

    for sig in previous:
        signal.signal(sig, request_stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def generator_states(generators: list[torch.Generator]) -> list[torch.Tensor]:
    return [g.get_state() for g in generators]


def restore_generators(generators: list[torch.Generator], states: list[torch.Tensor]) -> None:
    for gen, state in zip(generators, states, strict=True):
        gen.set_state(state.cpu())
