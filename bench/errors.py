"""User-facing errors: one line that says what is wrong and how to fix it.

The CLI prints `error: <message>` for these and exits with status 2 (no traceback
unless `--debug`). Anything else that escapes is a bug and keeps its traceback.
"""

from pathlib import Path


class UserError(Exception):
    """A problem with the user's input or environment, fixable by the user."""


class ConfigError(UserError):
    """An invalid run configuration, override, profile, grid or variant."""


class DataError(UserError):
    """Missing, truncated or altered data files."""


class StoreError(UserError):
    """The run store cannot be reached or is not a database."""


class DivergedError(Exception):
    """Training produced a NaN or infinite loss; the run stops at once.

    Not a UserError: the grid records the cell as failed and goes on.
    """

    def __init__(self, epoch: int, what: str) -> None:
        super().__init__(f"diverged at epoch {epoch}: {what} is not finite")
        self.epoch = epoch
        self.what = what


class Interrupted(Exception):
    """Training stopped on request after saving a checkpoint (bench.checkpoint)."""

    def __init__(self, path: Path, epoch: int, step: int) -> None:
        super().__init__(f"stopped at epoch {epoch + 1}, step {step}; checkpoint saved to {path}")
        self.path, self.epoch, self.step = path, epoch, step
