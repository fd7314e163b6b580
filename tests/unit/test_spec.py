"""Validation of the matrix file: every bad input is one clear ConfigError (exit 2)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from matrix import spec
from matrix.errors import EXIT_CONFIG, ConfigError

GOOD = """
bases:
  bookworm-py311: {image: "python:3.11-slim-bookworm"}
  jammy-cuda121:
    image: "nvidia/cuda:12.1.1-runtime-ubuntu22.04"
    setup: ["apt-get update", "apt-get install -y python3.10 python3.10-venv"]
    python: /usr/bin/python3.10
packages:
  numpy: ["1.26.4", "2.2.6"]
  scipy: ["1.11.4", "1.14.1"]
modes: [together, layered]
layered_order: [scipy, numpy]
exclude:
  - {base: jammy-cuda121, numpy: "2.2.6", reason: "not needed"}
include: []
install: {only_binary: true}
limits: {timeout_s: 300, memory: 4g}
"""


def load(tmp_path: Path, text: str) -> spec.Spec:
    p = tmp_path / "matrix.yaml"
    p.write_text(textwrap.dedent(text))
    return spec.load(p)


def bad(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert info.value.exit_code == EXIT_CONFIG
    assert str(tmp_path / "matrix.yaml") in str(info.value)
    return info.value


def test_the_issue_example_is_valid(tmp_path: Path) -> None:
    s = load(tmp_path, GOOD)
    assert [b.name for b in s.bases] == ["bookworm-py311", "jammy-cuda121"]
    assert s.base("jammy-cuda121").python == "/usr/bin/python3.10"
    assert s.base("bookworm-py311").python is None
    assert s.base("bookworm-py311").image_python == "python3"
    assert s.base("jammy-cuda121").image_python == "/usr/bin/python3.10"
    assert s.packages == (("numpy", ("1.26.4", "2.2.6")), ("scipy", ("1.11.4", "1.14.1")))
    assert s.layered_order == ("scipy", "numpy")
    assert s.exclude[0].pins == (("numpy", "2.2.6"),) and s.exclude[0].reason == "not needed"
    assert s.limits == spec.Limits(300.0, "4g")


def test_a_base_is_an_image_an_interpreter_or_both(tmp_path: Path) -> None:
    s = load(tmp_path, """
        bases:
          py312: {python: "3.12"}
          both: {image: "python:3.12-slim", python: "3.12"}
        packages: {numpy: ["2.2.6"]}
    """)
    assert s.base("py312").image is None and s.base("py312").python == "3.12"
    assert s.base("both").image_python == "python3.12"
    assert bad(tmp_path, "bases: {b: {setup: []}}\npackages: {numpy: ['1']}\n").key == "bases.b"
    assert "quote it" in str(bad(tmp_path, "bases: {b: {python: 3.10}}\npackages: {numpy: ['1']}\n"))


def test_layered_order_defaults_to_file_order_and_is_completed(tmp_path: Path) -> None:
    s = load(tmp_path, """
        bases: {b: {image: "python:3.12"}}
        packages: {numpy: ["1.0"], scipy: ["1.0"], torch: ["2.13.0+cpu"]}
        layered_order: [torch]
    """)
    assert s.layered_order == ("torch", "numpy", "scipy")
    assert s.modes == ("together",)


@pytest.mark.parametrize(
    ("text", "key", "hint"),
    [
        ("bases: {b: {image: x}}\npackages: {numpy: ['1']}\nmode: [together]\n", "mode", "did you mean 'modes'"),
        ("bases: {b: {image: x, pyhton: python3}}\npackages: {numpy: ['1']}\n", "bases.b.pyhton",
         "did you mean 'python'"),
        ("bases: {b: {image: x}}\npackages: {numpy: ['1']}\ninstall: {only_binaries: true}\n",
         "install.only_binaries", "did you mean 'only_binary'"),
        ("bases: {b: {image: x}}\npackages: {numpy: ['1']}\nmodes: [layerd]\n", "modes[0]", "did you mean 'layered'"),
        ("bases: {b: {image: x}}\npackages: {numpy: ['1']}\nlimits: {timeout: 3}\n", "limits.timeout", "timeout_s"),
    ],
)
def test_unknown_keys_get_a_did_you_mean(tmp_path: Path, text: str, key: str, hint: str) -> None:
    e = bad(tmp_path, text)
    assert e.key == key
    assert hint in str(e)


@pytest.mark.parametrize(
    "pin",
    ["1.0; rm -rf /", "1.0 --index-url http://x", "1.0\n--extra-index-url http://x", "${HOME}",
     ">=1.0", "1.0,<2", "https://example.invalid/numpy.whl", "not a version", "1.0 ", ""],
)
def test_pins_must_be_plain_versions(tmp_path: Path, pin: str) -> None:
    import json

    e = bad(tmp_path, f"bases: {{b: {{image: x}}}}\npackages: {{numpy: [{json.dumps(pin)}]}}\n")
    assert e.key == "packages.numpy[0]"
    assert "PEP 440" in str(e) or "version" in str(e)


def test_a_yaml_float_version_is_refused_with_the_reason(tmp_path: Path) -> None:
    e = bad(tmp_path, "bases: {b: {image: x}}\npackages: {scipy: [1.10]}\n")
    assert e.key == "packages.scipy[0]"
    assert "quote it" in str(e)


@pytest.mark.parametrize(("text", "key", "typed"), [
    ("bases: {b: {image: x}}\npackages: {scipy: [1.10]}\n", "packages.scipy[0]", "1.10"),
    ("bases: {b: {image: x}}\npackages:\n  scipy:\n    - '1.9'\n    - 1.10\n", "packages.scipy[1]", "1.10"),
    ("bases: {b: {image: x}}\npackages: {numpy: ['1.26.4'], scipy: ['1.9']}\n"
     "include: [{base: b, numpy: '2.2.6', scipy: 1.110}]\n", "include[0].scipy", "1.110"),
    ("bases: {b: {image: x}}\npackages: {numpy: ['1.26.4']}\n"
     "exclude: [{numpy: 1.260, reason: x}]\n", "exclude[0].numpy", "1.260"),
    ("bases: {b: {python: 3.10}}\npackages: {numpy: ['1']}\n", "bases.b.python", "3.10"),
    ("bases:\n  b:\n    python: 3.20  # a comment\npackages: {numpy: ['1']}\n", "bases.b.python", "3.20"),
])
def test_the_quote_it_hint_shows_the_version_as_typed(tmp_path: Path, text: str, key: str, typed: str) -> None:
    """YAML reads 1.10 as 1.1: the hint must give back what the user typed, not the number."""
    for _ in range(2):  # the second load reads the parsed-input cache (JSON, where 1.10 is 1.1 too)
        e = bad(tmp_path, text)
        assert e.key == key
        assert f'quote it: "{typed}"' in str(e), str(e)


def test_the_quote_it_hint_through_an_alias_and_where_the_text_is_not_found(tmp_path: Path) -> None:
    e = bad(tmp_path, "bases: {b: {image: x}}\npackages: {numpy: [&v 1.10], scipy: [*v]}\n")
    assert e.key == "packages.numpy[0]" and 'quote it: "1.10"' in str(e)
    from matrix.spec import _scalar_text

    assert _scalar_text("a: {<<: {b: 1.10}}\n", ("a", "b")) is None  # under a merge key: not its own key
    assert _scalar_text("a: [1.10]\n", ("a", 3)) is None
    assert _scalar_text("a: '1.10'\n", ("a",)) is None  # quoted: never a number in the first place
    assert _scalar_text("a: [1.10]\n", ("a", 0)) == "1.10"
    assert _scalar_text(": : :\n", ("a",)) is None  # not YAML: no hint text, no exception


@pytest.mark.parametrize("name", ["numpy @ https://x/y.whl", "numpy==1.0", "-numpy", "num py", "numpy;"])
def test_package_names_must_be_pep508_names(tmp_path: Path, name: str) -> None:
    import json

    e = bad(tmp_path, f"bases: {{b: {{image: x}}}}\npackages: {{{json.dumps(name)}: ['1.0']}}\n")
    assert "PEP 508" in str(e)


@pytest.mark.parametrize(
    "image", ["python:3.12;echo", "python:3.12 && rm -rf /", "$(id)", "python:3.12\nRUN id", "Python:3", "a b"]
)
def test_image_references_with_shell_characters_are_refused(tmp_path: Path, image: str) -> None:
    import json

    e = bad(tmp_path, f"bases: {{b: {{image: {json.dumps(image)}}}}}\npackages: {{numpy: ['1.0']}}\n")
    assert e.key == "bases.b.image"


@pytest.mark.parametrize(
    "image",
    ["python:3.11-slim-bookworm", "nvidia/cuda:12.1.1-runtime-ubuntu22.04", "localhost:5000/team/img:v1",
     "compat-matrix-test/bookworm-py311:local", "python@sha256:" + "a" * 64],
)
def test_real_image_references_are_accepted(tmp_path: Path, image: str) -> None:
    load(tmp_path, f"bases: {{b: {{image: '{image}'}}}}\npackages: {{numpy: ['1.0']}}\n")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("bases: {}\npackages: {numpy: ['1']}\n", "bases"),
        ("bases: {b: {image: x}}\npackages: {}\n", "packages"),
        ("bases: {b: {image: x}}\npackages: {numpy: []}\n", "packages.numpy"),
        ("bases: {b: {image: x}}\npackages: {numpy: ['1']}\nmodes: []\n", "modes"),
        ("packages: {numpy: ['1']}\n", "bases"),
        ("bases: {b: {image: x}}\n", "packages"),
    ],
)
def test_empty_or_missing_axes_are_refused(tmp_path: Path, text: str, key: str) -> None:
    assert bad(tmp_path, text).key == key


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("exclude: [{base: nope, reason: r}]", "exclude[0].base"),
        ("exclude: [{numpy: '9.9', reason: r}]", "exclude[0].numpy"),
        ("exclude: [{numpy: '1.0'}]", "exclude[0].reason"),
        ("exclude: [{reason: everything}]", "exclude[0]"),
        ("exclude: [{nunpy: '1.0', reason: r}]", "exclude[0].nunpy"),
        ("include: [{numpy: '1.0'}]", "include[0].base"),
        ("include: [{base: b}]", "include[0]"),
        ("install: {index_url: 'http://x y'}", "install.index_url"),
        ("install: {index_url: 'ftp://x'}", "install.index_url"),
        ("install: {extra_index_urls: ['https://x/simple;id']}", "install.extra_index_urls[0]"),
        ("install: {only_binary: 'yes'}", "install.only_binary"),
        ("install: {find_links: ['/no/such/dir']}", "install.find_links[0]"),
        ("install: {ca_bundle: '/no/such.pem'}", "install.ca_bundle"),
        ("limits: {timeout_s: 0}", "limits.timeout_s"),
        ("limits: {memory: 'lots'}", "limits.memory"),
        ("layered_order: [torch]", "layered_order[0]"),
    ],
)
def test_bad_sections_name_their_key(tmp_path: Path, extra: str, key: str) -> None:
    e = bad(tmp_path, f"bases: {{b: {{image: x}}}}\npackages: {{numpy: ['1.0']}}\n{extra}\n")
    assert e.key == key
    assert "fix:" in str(e) or "did you mean" in str(e) or "expected" in str(e)


def test_python_tags_are_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    e = bad(tmp_path, f"bases: !!python/object/apply:os.system ['touch {marker}']\npackages: {{numpy: ['1']}}\n")
    assert "!!python/ tag is refused" in str(e)
    assert not marker.exists()


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    e = bad(tmp_path, "bases: {b: {image: x}}\npackages: {numpy: ['1']}\npackages: {scipy: ['1']}\n")
    assert "duplicate key" in str(e)


def test_same_package_twice_under_other_spellings(tmp_path: Path) -> None:
    e = bad(tmp_path, "bases: {b: {image: x}}\npackages: {scikit_learn: ['1.0'], Scikit-Learn: ['1.1']}\n")
    assert e.key == "packages.Scikit-Learn"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        spec.load(tmp_path / "nope.yaml")
    assert "no such file" in str(info.value)


def test_ca_bundle_auto_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    for var in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)
    text = "bases: {b: {image: x}}\npackages: {numpy: ['1']}\n"
    assert load(tmp_path, text).install.ca_bundle is None
    monkeypatch.setenv("SSL_CERT_FILE", str(pem))
    assert load(tmp_path, text).install.ca_bundle == pem
    assert load(tmp_path, text + "install: {ca_bundle: none}\n").install.ca_bundle is None


def test_relative_paths_are_relative_to_the_matrix_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "wheels").mkdir()
    monkeypatch.chdir("/")
    s = load(tmp_path, "bases: {b: {image: x}}\npackages: {numpy: ['1']}\ninstall: {find_links: [wheels]}\n")
    assert s.install.find_links == (str(tmp_path / "wheels"),)


def test_a_pinned_axis_may_have_an_index_of_its_own(tmp_path: Path) -> None:
    from matrix import install
    from matrix.cells import Cell
    from matrix.resultcache import ResultCache

    cu = "https://download.pytorch.org/whl/cu121"
    s = spec.parse(f"bases: {{b: {{python: '3.11'}}}}\npackages:\n  numpy: ['1.26.4']\n"
                   f"  torch: {{versions: ['2.4.1+cu121', '2.4.1+cpu'], index_url: '{cu}'}}\n", tmp_path / "m.yaml")
    assert dict(s.packages)["torch"] == ("2.4.1+cu121", "2.4.1+cpu") and s.sources == (("torch", cu),)
    with_torch = Cell("b", "together", (("numpy", "1.26.4"), ("torch", "2.4.1+cu121")))
    (cmd,) = install.uv_commands(with_torch, s, "uv", "v/bin/python", [])
    assert cmd[cmd.index("--extra-index-url") + 1] == cu  # searched before the default index
    (plain,) = install.uv_commands(Cell("b", "together", (("numpy", "1.26.4"),)), s, "uv", "v/bin/python", [])
    assert "--extra-index-url" not in plain  # only cells that pin torch
    cache = ResultCache(s, "venv", directory=tmp_path / "c")
    other = spec.parse("bases: {b: {python: '3.11'}}\npackages:\n  numpy: ['1.26.4']\n"
                       "  torch: ['2.4.1+cu121', '2.4.1+cpu']\n", tmp_path / "m.yaml")
    assert cache.key(with_torch, "id") != ResultCache(other, "venv", directory=tmp_path / "c").key(with_torch, "id")


@pytest.mark.parametrize("body, key", [
    ("{versions: ['2.4.1'], index_url: 'not a url'}", "packages.torch.index_url"),
    ("{versions: ['2.4.1'], index_url: 'https://u:p@idx.example/simple'}", "packages.torch.index_url"),
    ("{versions: ['2.4.1'], indexurl: 'https://idx.example/simple'}", "packages.torch.indexurl"),
    ("{versions: [], index_url: 'https://idx.example/simple'}", "packages.torch.versions"),
    ("{versions: [2.10], index_url: 'https://idx.example/simple'}", "packages.torch.versions[0]"),
])
def test_a_bad_axis_index_is_bad_input(tmp_path: Path, body: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        spec.parse(f"bases: {{b: {{python: '3.11'}}}}\npackages: {{torch: {body}}}\n", tmp_path / "m.yaml")
    assert info.value.key == key and "u:p@" not in str(info.value)
    if key.endswith("[0]"):
        assert 'quote it: "2.10"' in str(info.value)


def test_a_base_may_be_the_teams_own_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "Dockerfile.v77").write_text("FROM python:3.11-slim\n")
    s = spec.parse("bases: {v77: {dockerfile: docker/Dockerfile.v77}}\npackages: {numpy: ['1.26.4']}\n",
                   tmp_path / "m.yaml")
    assert s.base("v77").dockerfile == str(tmp_path / "docker" / "Dockerfile.v77")  # beside the matrix file
    for body, problem in (("{dockerfile: docker/nope}", "is not a file on this machine"),
                          ("{dockerfile: docker/Dockerfile.v77, image: 'python:3.11'}", "not both"),
                          ("{dockerfile: 3}", "expected a path")):
        with pytest.raises(ConfigError) as info:
            spec.parse(f"bases: {{v77: {body}}}\npackages: {{numpy: ['1.26.4']}}\n", tmp_path / "m.yaml")
        assert info.value.key == "bases.v77.dockerfile" and problem in str(info.value)
