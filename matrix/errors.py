"""The tool's own errors: each kind carries the exit code the command line ends with.

Every message goes through redact(): a URL's user:password@ never reaches the terminal, whatever
the message quotes (a validation message quotes the offending value).
"""

from __future__ import annotations

import re

# Exit codes, documented in the README.
EXIT_OK = 0
EXIT_FAILED = 1  # reserved for "problems found" verdicts (preflight, regressions)
EXIT_CONFIG = 2  # bad input: nothing was built, nothing was written
EXIT_INFRA = 3  # the tool's world failed (engine unreachable, cells ended in infra-error)
EXIT_INTERRUPTED = 130  # Ctrl-C; SIGTERM ends with 143


# An infra-error that every later cell would repeat: the sweep stops on it.
ENGINE_GONE = "the Docker Engine stopped answering"

# A URL's credentials: scheme://user:password@. What a hand-typed password may hold is hidden too,
# by the longer of two readings: anything up to the last '@' before the host's first '/' or the
# line's end (spaces, '$', quotes, '@'); after "user:", anything but whitespace up to the word's last
# '@' ('@' and '/'). A mistyped URL, or one followed on its line by an '@', may lose more than its
# credentials, never show part of them. A scheme starts a word; each reading is one scan that stops
# at a '/' or a line's end, or at whitespace or the next '://': linear in the text.
_SCHEME = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://")
_READINGS = (re.compile(r"[^/\r\n]*@"), re.compile(r"[^/\s:@]*:(?:(?!://)\S)*@"))


def _credentials(text: str) -> list[tuple[int, int]]:
    """(start, end) of each URL's credentials (the text between '://' and its '@', inclusive)."""
    spans: list[tuple[int, int]] = []
    for m in _SCHEME.finditer(text):
        if spans and m.start() < spans[-1][1]:
            continue  # inside credentials already hidden
        ends = [found.end() for rx in _READINGS if (found := rx.match(text, m.end()))]
        if ends:
            spans.append((m.end(), max(ends)))
    return spans


def redact(text: str) -> str:
    """Hide credentials in URLs (https://user:token@host → https://***@host)."""
    out, last = [], 0
    for start, end in _credentials(text):
        out += [text[last:start], "***@"]
        last = end
    return "".join(out) + text[last:] if out else text


def has_credentials(text: str) -> bool:
    """Whether the text holds a URL with user:password@ (or a token@) in it."""
    return bool(_credentials(text))


class CompatMatrixError(Exception):
    """Base of every error the command line turns into a message and an exit code."""

    exit_code = EXIT_FAILED

    def __str__(self) -> str:
        return redact(super().__str__())


class ConfigError(CompatMatrixError):
    """Bad input. The message names the file, the key and the fix."""

    exit_code = EXIT_CONFIG

    def __init__(self, file: str, key: str, problem: str, fix: str = "") -> None:
        file, key, problem, fix = redact(str(file)), redact(str(key)), redact(str(problem)), redact(str(fix))
        self.file, self.key, self.problem, self.fix = file, key, problem, fix
        where = f"{file}: {key}" if key else file
        message = f"{where}: {problem}"
        if fix:
            message += f"\n  fix: {fix}"
        super().__init__(message)


class EngineUnavailable(CompatMatrixError):
    """No Docker Engine answered; nothing can be built."""

    exit_code = EXIT_INFRA


class ResultsUnwritable(CompatMatrixError):
    """The results directory could not be written (full, read-only, gone): the tool's world."""

    exit_code = EXIT_INFRA


class Cancelled(Exception):
    """A cell's run was stopped by its backend's cancel() (an interrupt): no verdict, not recorded."""


class IndexUnusable(CompatMatrixError):
    """The package index answered, but not with an index (a proxy's sign-in page, random bytes,
    JSON of another shape): the tool's world failed, and the answer is never kept."""

    exit_code = EXIT_INFRA
