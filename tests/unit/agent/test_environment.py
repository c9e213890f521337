"""The clean environment: fixed base, caller additions, loader and interpreter variables refused by name."""

from __future__ import annotations

import pytest

from teleops.agent.environment import FIXED_PATH, EnvironmentRefused, build_environment


def test_base_environment_is_fixed() -> None:
    assert build_environment({}, home="/var/lib/teleops") == {
        "PATH": FIXED_PATH,
        "LANG": "C.UTF-8",
        "HOME": "/var/lib/teleops",
    }


def test_extra_variables_are_added() -> None:
    env = build_environment({"SERVICE": "nginx", "LC_ALL": "C"}, home="/")
    assert env["SERVICE"] == "nginx"
    assert env["LC_ALL"] == "C"


@pytest.mark.parametrize(
    "name",
    [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "ld_preload",
        "PATH",
        "HOME",
        "IFS",
        "BASH_ENV",
        "ENV",
        "BASH_FUNC_ls%%",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PERL5OPT",
        "NODE_OPTIONS",
        "GCONV_PATH",
        "GLIBC_TUNABLES",
        "MALLOC_CHECK_",
        "DYLD_INSERT_LIBRARIES",
        "GIT_SSH_COMMAND",
        "PAGER",
    ],
)
def test_dangerous_variables_are_refused_by_name(name: str) -> None:
    with pytest.raises(EnvironmentRefused) as info:
        build_environment({name: "x"}, home="/")
    assert name in str(info.value)


@pytest.mark.parametrize("name", ["", "A=B", "1ABC", "A B", "A-B", "A\x00"])
def test_malformed_names_are_refused(name: str) -> None:
    with pytest.raises(EnvironmentRefused, match="not a plain NAME"):
        build_environment({name: "x"}, home="/")


def test_nul_in_value_is_refused() -> None:
    with pytest.raises(EnvironmentRefused, match="NUL"):
        build_environment({"OK_NAME": "a\x00b"}, home="/")


def test_one_bad_variable_refuses_the_whole_request() -> None:
    with pytest.raises(EnvironmentRefused, match="LD_PRELOAD"):
        build_environment({"GOOD": "1", "LD_PRELOAD": "/tmp/x.so"}, home="/")
