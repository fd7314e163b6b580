"""No message shows a URL's password: redaction happens in the errors themselves, whatever they quote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matrix import install, spec
from matrix.errors import CompatMatrixError, ConfigError, has_credentials, redact

MATRIX = 'bases: {b: {image: "python:3.11"}}\npackages: {numpy: ["1.26.4"]}\ninstall: {%s: %s}\n'


def config_error(key: str, url: str) -> ConfigError:
    value = json.dumps([url] if key != "index_url" else url)
    with pytest.raises(ConfigError) as info:
        spec.parse(MATRIX % (key, value), Path("matrix.yaml"))
    return info.value


@pytest.mark.parametrize("password", ["pa$$word", "trailing ", "it's", "p@ss$", "a/b$c", "sp ace", 'q"uote'])
@pytest.mark.parametrize("key", ["index_url", "extra_index_urls", "find_links"])
def test_a_url_that_fails_validation_is_quoted_without_its_password(key: str, password: str) -> None:
    e = config_error(key, f"https://alice:{password}@pypi.corp/simple")
    shown = "\n".join([str(e), e.problem, e.fix, e.file, e.key])
    assert password.strip() not in shown and "alice" not in shown, shown
    assert "https://***@pypi.corp/simple" in str(e)


def test_every_error_of_the_tool_is_redacted() -> None:
    e = CompatMatrixError("cannot reach tcp://admin:hunter2@10.0.0.1:2376")
    assert str(e) == "cannot reach tcp://***@10.0.0.1:2376"
    c = ConfigError("https://u:hunter2@x/m.yaml", "install.index_url", "got 'https://u:hunter2 @x/simple'",
                    "e.g. https://u:hunter2@x/simple")
    assert "hunter2" not in str(c) + c.file + c.problem + c.fix


def test_redaction_keeps_what_is_not_a_credential() -> None:
    assert install.redact is redact  # the backends' import still works
    for text in ("https://pypi.org/simple numpy foo@bar", "git+https://github.com/a/b@v1.0",
                 "https://host:8080/simple", "file:///wheels/numpy-1.26.4.whl", "http(s):// or file:// URL",
                 "scipy==1.11.4 depends on numpy<1.28.0"):
        assert redact(text) == text and not has_credentials(text)
    assert redact("--index-url https://alice:s3cret@pypi.corp/simple --extra-index-url http://tok@x/y") == (
        "--index-url https://***@pypi.corp/simple --extra-index-url http://***@x/y")
    # A URL with no path followed on its line by an '@': more is hidden, never less.
    assert redact("https://alice:pw@host numpy foo@bar") == "https://***@bar"
    # A password with '@' and '/' in it: the longer reading wins (hypothesis found '@/' showing its tail).
    assert redact("https://alice:S3CR@/ET9@pypi.corp/simple x") == "https://***@pypi.corp/simple x"
    assert redact("https://alice:pw@host/simple numpy foo@bar") == "https://***@host/simple numpy foo@bar"


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n/"), min_size=1, max_size=20),
       st.sampled_from(["index_url", "extra_index_urls", "find_links"]))
def test_any_password_stays_hidden_in_any_message(secret: str, key: str) -> None:
    password = f"S3CR{secret}ET9"
    url = f"https://alice:{password}@pypi.corp/simple"
    value = json.dumps([url] if key != "index_url" else url)
    try:
        spec.parse(MATRIX % (key, value), Path("matrix.yaml"))
    except ConfigError as e:
        shown_all: tuple[str, ...] = (str(e), e.problem, e.fix)
    else:  # the URL was accepted: then the logs' redaction must hide it
        shown_all = (redact(url), redact(f"uv pip install --index-url {url} numpy"))
    for shown in shown_all:
        assert "S3CR" not in shown and "ET9" not in shown, shown


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(blacklist_categories=["Cs", "Zs", "Cc", "Zl", "Zp"]), min_size=1, max_size=20)
       .filter(lambda s: "://" not in s))  # where a scan stops, so that redaction stays linear
def test_any_password_without_whitespace_is_hidden_in_a_log_line(secret: str) -> None:
    line = f"Looking in indexes: https://alice:S3CR{secret}ET9@pypi.corp/simple, https://pypi.org/simple"
    assert "S3CR" not in redact(line) and "ET9" not in redact(line)


def test_redaction_is_linear_on_hostile_text() -> None:
    # Every input bounded: a hang here would be a regex that backtracks.
    code = ("from matrix.errors import redact\n"
            "for t in ['http://a:' * 200000, 'http://' + 'a' * 10**6, 'a' * 10**6, 'x://a ' * 100000,"
            " 'http://a:b' + ' ' * 10**6, 'https://u:' + '@' * 10**5]:\n"
            "    redact(t)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=os.environ.copy())


def test_the_command_line_shows_no_password(tmp_path: Path) -> None:
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(MATRIX % ("index_url", json.dumps("https://alice:hunter2 $x@pypi.corp/simple")))
    done = subprocess.run([sys.executable, "-m", "matrix", "list", "--config", str(matrix)], capture_output=True,
                          text=True, timeout=120, env=os.environ.copy(), check=False)
    assert done.returncode == 2, done.stderr
    assert "install.index_url" in done.stderr and "https://***@pypi.corp/simple" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
