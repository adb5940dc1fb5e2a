"""The profiles file: the user's hubs and servers, each under a name, in one TOML file.

    [defaults]                      settings every profile starts from
    [profiles.<name>]               any setting under its long option name without ``--`` (hub-url, named-server,
                                    server-options as a table, hub-token-file, ...), and hub-token-env

    read_profiles(path, named) → ProfilesFile        the file read and checked: names, keys, value types
    ProfilesFile.settings(name, argv, environ, cwd)  one profile's Settings, built as flags and the environment
                                                     build them, with flags and the environment above the file
    ProfilesFile.each_settings(environ)              every profile's Settings from the file alone, or its error
    load_profiles(path, environ) → {name: Settings}  every profile from the file alone, in its order
    selected_settings(argv, environ, cwd)            what a command runs with: --profile's, or flags and env alone
    demo_wanted(argv, environ, cwd)                  whether to run the demo (no hub set, no profile to choose)
    every_profile(argv, environ, cwd)                the file whose profiles are all served at once, or None

Each option is checked by its row of ``config.OPTIONS``: the file knows no option of its own but hub-token-env.
Secrets (the options without a flag) are refused in the file, which gets shared and committed.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import (CONFIG_VARIABLE, OPTIONS, OPTIONS_BY_NAME, OWN_PAGES_PREFIX, ConfigError, Profile, Settings,
                     StoredTokenLookup, Upstream, chosen_profile, load_settings, profiles_file, wants_demo)

if sys.version_info >= (3, 11):
    import tomllib
else:  # the backport, the same parser under another name
    import tomli as tomllib

# The profile-only setting: the name of a variable holding the profile's hub token (one per hub, unlike
# JUPYTERHUB_API_TOKEN, which is never used for a profile).
TOKEN_VARIABLE_KEY = "hub-token-env"
_DEFAULTS, _PROFILES = "defaults", "profiles"

# Profile names become a path segment of the proxy's URLs (http://localhost:8000/<profile>/): the same rule as
# JupyterHub 6's server names, so a profile can be named after its server.
_PROFILE_NAME = re.compile(r"[a-z][a-z0-9-]{0,29}")
_RESERVED_NAME = OWN_PAGES_PREFIX.strip("/")  # the proxy's own pages
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The proxy's own variables: hub-token-env may not name one (JUPYTERHUB_API_TOKEN is another hub's token).
_OWN_VARIABLES = frozenset(option.env for option in OPTIONS if option.env)
# Settings that hold or find one hub's token: each profile names its own, never [defaults] for all hubs.
_TOKEN_KEYS = frozenset({"hub-token-file", TOKEN_VARIABLE_KEY})
_TABLE_OPTION = "server-options"  # the one setting written as a TOML table (JSON in the environment)
_SWITCH_WORDS = {True: "1", False: "0"}
_FILE_METAVAR = "FILE"  # the options whose value is a file (ca-cert, hub-token-file, client-cert, ...)
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


@dataclass(frozen=True)
class ProfilesFile:
    """The profiles of one file, in its order; empty when the default file does not exist."""

    path: Path
    profiles: dict[str, Profile] = field(default_factory=dict)

    def profile(self, name: str) -> Profile:
        """The profile named ``name``; ConfigError listing the known ones when there is none."""
        if name in self.profiles:
            return self.profiles[name]
        known = ", ".join(self.profiles) or "none"
        where = self.path if self.path.is_file() else f"{self.path}, which does not exist"
        raise ConfigError(f"There is no profile '{name}' in {where}: use one of its profiles ({known}), or add "
                          f"[profiles.{name}] to it.")

    def settings(self, name: str, argv: Sequence[str], environ: Mapping[str, str], cwd: Path,
                 stored: StoredTokenLookup | None = None, token_can_be_asked: bool = False) -> Settings:
        """The profile's Settings: flags > environment > the profile > [defaults] > built-in defaults."""
        return load_settings(argv, environ, cwd, stored=stored, token_can_be_asked=token_can_be_asked,
                             profile=self.profile(name))

    def each_settings(self, environ: Mapping[str, str],
                      stored: StoredTokenLookup | None = None) -> dict[str, Settings | ConfigError]:
        """Every profile's Settings from the file alone, or why it cannot be used, in the file's order: the
        environment gives only what a profile names (hub-token-env) and the company proxy's variables curl reads,
        not the one-server settings."""
        environ = _without_own_variables(environ)
        return self._each(lambda name: self.settings(name, [], environ, Path.cwd(), stored))

    def served_settings(self, argv: Sequence[str], environ: Mapping[str, str], cwd: Path,
                        stored: StoredTokenLookup | None = None) -> dict[str, Settings | ConfigError]:
        """Every profile's Settings as the proxy serving them all at once runs them, or why one cannot be used: flags
        and the environment above each profile, as with --profile (where to listen, the log level, ...)."""
        return self._each(lambda name: self.settings(name, argv, environ, cwd, stored))

    def _each(self, build: Callable[[str], Settings]) -> dict[str, Settings | ConfigError]:
        built: dict[str, Settings | ConfigError] = {}
        for name in self.profiles:
            try:
                built[name] = build(name)
            except ConfigError as exc:
                built[name] = exc
        return built


def read_profiles(path: Path, named: bool) -> ProfilesFile:
    """Read and check the profiles file at ``path``; a file the user ``named`` must exist, the default one may not."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        if named:
            raise ConfigError(f"The profiles file {path} does not exist: fix --config (or {CONFIG_VARIABLE}).") \
                from None
        return ProfilesFile(path)
    except OSError as exc:
        raise ConfigError(f"Cannot read the profiles file {path} ({exc.strerror or exc}): check it.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"The profiles file {path} is not text (UTF-8): save it as UTF-8.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_syntax_error(path, str(exc))) from None
    for key in data:
        if key not in (_DEFAULTS, _PROFILES):
            raise ConfigError(_unknown(path, "the top level", key, (_DEFAULTS, _PROFILES)))
    defaults = _table(data, _DEFAULTS, path, "[defaults]")
    shared_tokens = sorted(_TOKEN_KEYS & defaults.keys())
    if shared_tokens:
        raise ConfigError(f"{path}: [defaults] holds {shared_tokens[0]}, but a hub token belongs to one hub: move it "
                          "into the profile of that hub.")
    defaults_values = _values(path, "[defaults]", "", defaults)
    profiles: dict[str, Profile] = {}
    for name, table in _table(data, _PROFILES, path, "[profiles]").items():
        _check_name(path, name)
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: profiles.{name} is not a table: write it as [profiles.{name}] with its "
                              "settings below.")
        values = {**defaults_values, **_values(path, f"[profiles.{name}]", name, table)}
        token_variable = _token_variable(path, name, table.get(TOKEN_VARIABLE_KEY))
        if token_variable is not None and "hub-token-file" in values:
            raise ConfigError(f"{path}: [profiles.{name}] has both hub-token-file and {TOKEN_VARIABLE_KEY}: keep the "
                              "one that holds this hub's token.")
        profiles[name] = Profile(name, path, tuple(values.items()), token_variable)
    return ProfilesFile(path, profiles)


def load_profiles(path: Path | None, environ: Mapping[str, str],
                  stored: StoredTokenLookup | None = None) -> dict[str, Settings]:
    """Every profile's Settings from the file alone (``ProfilesFile.each_settings``), in the file's order. ``path``
    None: the default file (or the one JUPYTER_DEV_PROXY_CONFIG names). ConfigError for the first profile that
    cannot be used."""
    found = read_profiles(path, True) if path is not None else read_profiles(*profiles_file([], environ))
    built = found.each_settings(environ, stored)
    for settings in built.values():
        if isinstance(settings, ConfigError):
            raise settings
    return {name: settings for name, settings in built.items() if isinstance(settings, Settings)}


def selected_settings(argv: Sequence[str], environ: Mapping[str, str], cwd: Path, upstream: Upstream | None = None,
                      stored: StoredTokenLookup | None = None, token_can_be_asked: bool = False) -> Settings:
    """The settings a command runs with: the profile --profile (or JUPYTER_DEV_PROXY_PROFILE) names, with flags and
    the environment above it; without one, flags, environment and .env as always (no file needed)."""
    name = chosen_profile(argv, environ)
    if name is None or upstream is not None:
        return load_settings(argv, environ, cwd, upstream, stored, token_can_be_asked)
    return read_profiles(*profiles_file(argv, environ)).settings(name, argv, environ, cwd, stored,
                                                                 token_can_be_asked)


def demo_wanted(argv: Sequence[str], environ: Mapping[str, str], cwd: Path) -> bool:
    """Whether to run the demo: asked for with --demo, or no hub set anywhere and no profile to choose from."""
    if "--demo" in argv:
        return True
    return wants_demo(argv, environ, cwd) and chosen_profile(argv, environ) is None and \
        not read_profiles(*profiles_file(argv, environ)).profiles


def every_profile(argv: Sequence[str], environ: Mapping[str, str], cwd: Path) -> ProfilesFile | None:
    """The profiles file when the proxy serves every profile in it at once, each under /<profile>/: it has profiles,
    and neither --profile nor a hub (nor --demo) is set; else None (one server, at the root)."""
    if "--demo" in argv or chosen_profile(argv, environ) is not None or not wants_demo(argv, environ, cwd):
        return None
    found = read_profiles(*profiles_file(argv, environ))
    return found if found.profiles else None


def _without_own_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment without the proxy's own settings, which are meant for the one-server configuration."""
    return {name: value for name, value in environ.items() if name not in _OWN_VARIABLES}


def _syntax_error(path: Path, said: str) -> str:
    """tomllib's 'Invalid value (at line 2, column 5)' as 'path, line 2: invalid value'."""
    position = _TOML_POSITION.search(said)
    if position is None:
        return f"The profiles file {path} is not valid TOML ({said}): fix it."
    what = said[:position.start()]
    return (f"The profiles file {path} is not valid TOML at line {position.group(1)}, column {position.group(2)}: "
            f"{what[:1].lower()}{what[1:]}; fix that line (text values go in quotes: hub-url = \"https://...\").")


def _table(data: Mapping[str, Any], key: str, path: Path, shown: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {key} is not a table: write it as {shown} with its settings below.")
    return value


def _check_name(path: Path, name: str) -> None:
    if not _PROFILE_NAME.fullmatch(name):
        raise ConfigError(f"{path}: the profile name '{name}' cannot be used: a name is 1 to 30 lower-case letters, "
                          "digits and '-', starting with a letter (it becomes part of the proxy's URLs), "
                          "e.g. [profiles.gpu-2].")
    if name == _RESERVED_NAME:
        raise ConfigError(f"{path}: the profile name '{name}' is where the proxy's own pages are: give the profile "
                          "another name.")


def _values(path: Path, where: str, profile: str, table: Mapping[str, Any]) -> dict[str, str]:
    """A table's settings as the environment would write them, by long option name; hub-token-env is left out."""
    values: dict[str, str] = {}
    for key, value in table.items():
        if key == TOKEN_VARIABLE_KEY:
            continue
        option = OPTIONS_BY_NAME.get(key)
        if option is None:
            raise ConfigError(_unknown(path, where, key, [*OPTIONS_BY_NAME, TOKEN_VARIABLE_KEY]))
        if option.flag is None:
            raise ConfigError(_secret(path, where, key, profile))
        text = _as_text(path, where, key, value, option.switch)
        values[key] = _beside(path, text) if option.metavar == _FILE_METAVAR else text
    return values


def _beside(path: Path, file: str) -> str:
    """A file the profiles file names, relative to the profiles file's folder (not to wherever the proxy starts),
    so that a CA or token file can sit next to it."""
    named = Path(file)
    return file if named.is_absolute() or file.startswith("~") else str(path.parent / named)


def _unknown(path: Path, where: str, key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return (f"{path}: {where} has '{key}', which is not a setting{hint}: the settings are the long options of "
            "jupyter-dev-proxy --help without their '--'.")


def _secret(path: Path, where: str, key: str, profile: str) -> str:
    """Why a secret is refused in the file, and where it goes instead: a file it names, or the kept token."""
    instead = [f"name a file only you can read that holds it with {key}-file"] if f"{key}-file" in OPTIONS_BY_NAME \
        else []
    if key == "hub-token":
        instead.append(f"run  jupyter-dev-proxy login{f' --profile {profile}' if profile else ''}  to keep it in "
                       "your keyring")
    advice = " or ".join(instead) or "keep it out of this file"
    return (f"{path}: {where} holds {key}, a secret, and files like this one get shared and committed: remove it "
            f"and {advice}.")


def _as_text(path: Path, where: str, key: str, value: Any, switch: bool) -> str:
    """A TOML value as the setting's variable would hold it: text and numbers as written, true/false for a switch,
    a list as comma-separated items, server-options' table as JSON (which the setting turns canonical)."""
    if isinstance(value, bool):
        if switch:
            return _SWITCH_WORDS[value]
    elif isinstance(value, (str, int, float)):
        return str(value)
    elif isinstance(value, list) and all(isinstance(item, (str, int)) and not isinstance(item, bool)
                                         for item in value):
        return ",".join(str(item) for item in value)
    elif isinstance(value, dict) and key == _TABLE_OPTION:
        try:
            return json.dumps(value)
        except TypeError:  # a date or time in it, which JSON has no way to write
            pass
    kind = ("a table of text, numbers and true/false" if key == _TABLE_OPTION else
            "true or false" if switch else "text or a number")
    raise ConfigError(f"{path}: {where} {key} = {value!r} cannot be used: write it as {kind}.")


def _token_variable(path: Path, profile: str, value: Any) -> str | None:
    """hub-token-env's variable: a variable's name, and not one of the proxy's own."""
    if value is None:
        return None
    if not isinstance(value, str) or not _VARIABLE_NAME.fullmatch(value):
        raise ConfigError(f"{path}: [profiles.{profile}] {TOKEN_VARIABLE_KEY} = {value!r} is not a variable's name: "
                          'write the name of the variable that holds this hub\'s token, e.g. "WORK_HUB_TOKEN".')
    if value in _OWN_VARIABLES:
        raise ConfigError(f"{path}: [profiles.{profile}] {TOKEN_VARIABLE_KEY} names {value}, one of the proxy's own "
                          "settings, which may hold another hub's token: give this hub's token a variable of its "
                          "own, for example WORK_HUB_TOKEN.")
    return value
