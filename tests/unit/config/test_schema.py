"""Keys declared as dataclass fields, read back, and a section's values checked against them: unknown keys, ${VAR},
YAML types, defaults, bounds, choices and secrets inline or in a file."""
import math
from dataclasses import MISSING, dataclass, fields

import pytest

from registry_mirror.config.kinds import BOOL, DURATION, PATH, SECONDS, SECRET, STRING, ConfigError, Secret
from registry_mirror.config.schema import Key, check_types, convert, declared, expand, key


@dataclass(frozen=True)
class Section:
    """A section of the kind mirror.yaml has, declared with `key()`."""
    name: str = key(STRING, "A required string.", required="yes")
    mode: str = key(STRING, "One of three.", "keep", choices=("keep", "add", "strip"))
    timeout: float = key(SECONDS, "Above zero.", 5, bounds=(0, 3600), above=True)
    max_age: float = key(DURATION, "At least a minute.", "7d", check=lambda s: "is under a minute" if s < 60 else None)
    enabled: bool = key(BOOL, "A switch.", False)
    folder: str | None = key(PATH, "Relative to the file.", None)
    password: Secret | None = key(SECRET, "Inline or in password_file.", None)
    match_prefix: str = key(STRING, "Only in routes, named prefix in the file.", "", name="prefix", routes_only=True)


KEYS = declared(Section)


def resolve(path: str) -> str:
    return f"/srv/mirror/{path}" if path and not path.startswith("/") else path


def test_the_declared_keys_are_in_order_by_their_name_in_the_file_with_the_converted_default():
    assert list(KEYS) == ["name", "mode", "timeout", "max_age", "enabled", "folder", "password"]
    assert list(declared(Section, routes=True))[-1] == "prefix"
    assert declared(Section, routes=True)["prefix"][0] == "match_prefix"  # (attribute, Key)
    assert Section(name="x").max_age == 7 * 86400.0  # the attribute's default, converted
    assert KEYS["max_age"][1].default == "7d" and KEYS["name"][1].default is MISSING  # as an operator writes it
    assert not next(f for f in fields(Section) if f.name == "password").repr  # a secret never in a repr


@pytest.mark.parametrize("declaration,value,complaint", [
    (Key(SECONDS, "d", 1, bounds=(0, 3600), above=True), 0.0, "is out of range; expected more than 0, at most 3600 "
                                                            "seconds"),
    (Key(SECONDS, "d", 1, bounds=(0, 3600), above=True), 3600.0, None),
    (Key(SECONDS, "d", 1, bounds=(5, 60)), 5.0, None),
    (Key(SECONDS, "d", 1, bounds=(5, 60)), 61.0, "is out of range; expected 5 to 60 seconds"),
    (Key(SECONDS, "d", 1, bounds=(5, 60)), math.nan, "is out of range; expected 5 to 60 seconds"),
    (Key(STRING, "d", "", choices=("text", "json")), "xml", "is not one of text, json"),
    (Key(STRING, "d", "", choices=("text", "json")), "json", None),
    (Key(DURATION, "d", 60, check=lambda s: "is under a minute" if s < 60 else None), 30.0, "is under a minute"),
])
def test_a_converted_value_out_of_bounds_or_choices_says_what_would_be_right(declaration, value, complaint):
    assert declaration.complaint(value) == complaint


def test_unknown_keys_are_refused_with_the_valid_ones_including_a_secrets_file_key():
    with pytest.raises(ConfigError) as e:
        check_types("section", {"passwd": "x"}, KEYS, {})
    assert str(e.value) == ("unknown key section.passwd: valid keys are name, mode, timeout, max_age, enabled, "
                            "folder, password, password_file")
    assert check_types("section", {"password_file": "pw"}, KEYS, {}) == {"password_file": "pw"}


@pytest.mark.parametrize("values,message", [
    ({"timeout": True}, "section.timeout: expected a number of seconds, got a boolean"),
    ({"enabled": "yes"}, "section.enabled: expected true or false, got str 'yes'"),
    ({"name": 5}, "section.name: expected a string, got int 5"),
    ({"name": "${NOT_SET_IN_THIS_TEST}"}, "section.name: environment variable NOT_SET_IN_THIS_TEST is not set; "
                                          "export it or put the value in the file"),
])
def test_a_value_of_the_wrong_type_names_the_key_and_the_expected_kind(values, message):
    with pytest.raises(ConfigError) as e:
        check_types("section", values, KEYS, {})
    assert str(e.value) == message


def test_a_secret_of_the_wrong_type_is_refused_without_showing_it():
    with pytest.raises(ConfigError) as e:
        check_types("section", {"password": ["fake-password"]}, KEYS, {})
    assert str(e.value) == "section.password: expected a string"


def test_variables_are_expanded_in_strings_and_in_lists():
    environ = {"REPO": "docker-remote", "HOST": "auth.example.com"}
    assert check_types("section", {"name": "${REPO}-x"}, KEYS, environ) == {"name": "docker-remote-x"}
    assert expand("upstream.allowed_realm_hosts", "${HOST}:443", environ) == "auth.example.com:443"
    assert expand("section.name", "no $VAR or ${ braces", {}) == "no $VAR or ${ braces"


def test_convert_fills_defaults_resolves_paths_and_checks_bounds():
    attributes = convert("section", {"name": "app", "folder": "data", "max_age": "12h"}, KEYS, resolve)
    assert attributes == {"name": "app", "mode": "keep", "timeout": 5.0, "max_age": 43200.0, "enabled": False,
                          "folder": "/srv/mirror/data", "password": None}
    with pytest.raises(ConfigError, match=r"^section.name: missing; expected a string$"):
        convert("section", {}, KEYS, resolve)
    with pytest.raises(ConfigError, match=r"^section.timeout: 0 is out of range; expected more than 0, at most 3600 "
                                          r"seconds$"):
        convert("section", {"name": "app", "timeout": 0}, KEYS, resolve)
    with pytest.raises(ConfigError, match=r"^section.mode: 'copy' is not one of keep, add, strip$"):
        convert("section", {"name": "app", "mode": "copy"}, KEYS, resolve)
    with pytest.raises(ConfigError, match=r"^section.max_age: '30s' is under a minute$"):
        convert("section", {"name": "app", "max_age": "30s"}, KEYS, resolve)


def test_a_secret_comes_inline_or_from_the_first_line_of_its_file_never_both(tmp_path):
    (tmp_path / "pw").write_text("fake-from-file\n# rotated by an agent\n")
    from_file = convert("section", {"name": "a", "password_file": str(tmp_path / "pw")}, KEYS, resolve)
    assert from_file["password"] == "fake-from-file" and isinstance(from_file["password"], Secret)
    assert convert("section", {"name": "a", "password": "fake-inline"}, KEYS, resolve)["password"] == "fake-inline"
    with pytest.raises(ConfigError, match=r"^section.password: set password or password_file, not both$"):
        convert("section", {"name": "a", "password": "x", "password_file": str(tmp_path / "pw")}, KEYS, resolve)


@pytest.mark.parametrize("values,message", [
    ({"password": ""}, "section.password: empty; expected the secret, or remove the key"),
    ({"password_file": "{tmp}/empty"}, "section.password_file: {tmp}/empty is empty; expected the secret on its "
                                       "first line"),
    ({"password_file": "{tmp}/missing"}, "section.password_file: cannot read {tmp}/missing: No such file or "
                                         "directory; expected a readable file holding only the secret"),
])
def test_an_empty_or_unreadable_secret_says_what_would_be_right(tmp_path, values, message):
    (tmp_path / "empty").write_text("\n")
    values = {k: v.format(tmp=tmp_path) for k, v in values.items()}
    with pytest.raises(ConfigError) as e:
        convert("section", {"name": "a", **values}, KEYS, resolve)
    assert str(e.value) == message.format(tmp=tmp_path)
