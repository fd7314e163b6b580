"""The tool's own errors: each kind carries the exit code the command line ends with."""

from __future__ import annotations

# Exit codes, documented in the README.
EXIT_OK = 0
EXIT_FAILED = 1  # reserved for "problems found" verdicts (preflight, regressions)
EXIT_CONFIG = 2  # bad input: nothing was built, nothing was written
EXIT_INFRA = 3  # the tool's world failed (engine unreachable, cells ended in infra-error)
EXIT_INTERRUPTED = 130  # Ctrl-C; SIGTERM ends with 143


# An infra-error that every later cell would repeat: the sweep stops on it.
ENGINE_GONE = "the Docker Engine stopped answering"


class CompatMatrixError(Exception):
    """Base of every error the command line turns into a message and an exit code."""

    exit_code = EXIT_FAILED


class ConfigError(CompatMatrixError):
    """Bad input. The message names the file, the key and the fix."""

    exit_code = EXIT_CONFIG

    def __init__(self, file: str, key: str, problem: str, fix: str = "") -> None:
        self.file, self.key, self.problem, self.fix = file, key, problem, fix
        where = f"{file}: {key}" if key else file
        message = f"{where}: {problem}"
        if fix:
            message += f"\n  fix: {fix}"
        super().__init__(message)


class EngineUnavailable(CompatMatrixError):
    """No Docker Engine answered; nothing can be built."""

    exit_code = EXIT_INFRA


class Cancelled(Exception):
    """A cell's run was stopped by its backend's cancel() (an interrupt): no verdict, not recorded."""
