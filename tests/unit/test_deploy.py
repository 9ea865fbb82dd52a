"""The deployment files (deploy/) and the README's "Deploying" section agree with the code:
settings that exist, commands the CLI takes, the ports the units start and nginx
spreads over, body limits and pool sizes as the service has them. No external tool."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path, PurePosixPath

import pytest
from pydantic import ValidationError
from sqlalchemy.pool import QueuePool

from backend import cli
from backend.config import PLACEHOLDER_SECRETS, Settings
from backend.crypto import new_key
from backend.db import create_engine
from backend.services.media_store import media_store
from backend.web.bodies import WEBHOOK_LIMIT, upload_limit
from bot import telegram, zalo_bot, zalo_oa
from bot.inbox import STORE_LIMIT

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
ENV_EXAMPLE = DEPLOY / "hotline.env.example"
MIGRATE_ENV_EXAMPLE = DEPLOY / "migrate.env.example"
PLACEHOLDER = "changeme"
SETTING = re.compile(r"\bHOTLINE_[A-Z0-9_]+")


# --- reading the files -------------------------------------------------------------------


def env_file(path: Path) -> dict[str, str]:
    """NAME=value lines as systemd's EnvironmentFile= reads them, restricted to what a
    POSIX shell reads the same way: an unquoted value without blanks, quotes, `$` or
    backslashes, or a value in single quotes (kept verbatim by both)."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith(("#", ";")):
            continue
        found = re.fullmatch(r"(HOTLINE_[A-Z0-9_]+)=('[^']*'|[^\s'\"$`\\]*)", line)
        assert found, f"{path.name}:{number}: not NAME=value as systemd and sh read it"
        name, value = found.groups()
        values[name] = value[1:-1] if value.startswith("'") else value
    return values


def unit_file(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit: section → key → values (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def units() -> dict[str, dict[str, dict[str, list[str]]]]:
    return {path.name: unit_file(path) for path in sorted(SYSTEMD.iterdir())}


def service(name: str) -> dict[str, list[str]]:
    return units()[name]["Service"]


def target_ports() -> list[int]:
    """The ports of the hotline@PORT.service instances that hotline.target starts."""
    wanted = " ".join(units()["hotline.target"]["Unit"]["Wants"]).split()
    ports = []
    for name in wanted:
        found = re.fullmatch(r"hotline@(\d+)\.service", name)
        assert found, f"hotline.target wants {name}, not a hotline@PORT instance"
        ports.append(int(found.group(1)))
    return ports


@dataclass
class Directive:
    name: str
    args: list[str]
    children: list[Directive] = field(default_factory=list)

    def find(self, name: str) -> Iterator[Directive]:
        return (child for child in self.children if child.name == name)

    def value(self, name: str) -> str:
        (found,) = [child.args for child in self.find(name)]
        return " ".join(found)


def nginx_config(path: Path) -> Directive:
    """nginx's configuration as a tree of directives (enough for this file: no quoted
    braces or semicolons)."""
    text = re.sub(r"#[^\n]*", "", path.read_text(encoding="utf-8"))
    tokens = re.findall(r"\"[^\"]*\"|[{};]|[^\s{};]+", text)
    root = Directive("", [])
    stack = [root]
    words: list[str] = []
    for token in tokens:
        if token == "{":
            block = Directive(words[0], words[1:])
            stack[-1].children.append(block)
            stack.append(block)
            words = []
        elif token == ";":
            stack[-1].children.append(Directive(words[0], words[1:]))
            words = []
        elif token == "}":
            assert not words, f"unterminated directive {words}"
            stack.pop()
        else:
            words.append(token.strip('"'))
    assert len(stack) == 1 and not words, "unbalanced braces"
    return root


def nginx_size(value: str) -> int:
    units = {"": 1, "k": 1024, "m": 1024 * 1024}
    found = re.fullmatch(r"(\d+)([km]?)", value.lower())
    assert found, value
    return int(found.group(1)) * units[found.group(2)]


def nginx_seconds(value: str) -> float:
    found = re.fullmatch(r"(\d+)(ms|s|m)?", value)
    assert found, value
    return int(found.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60}[found.group(2)]


def https_server() -> Directive:
    (server,) = [
        s
        for s in nginx_config(DEPLOY / "nginx" / "hotline.conf").find("server")
        if any("ssl" in listen.args for listen in s.find("listen"))
    ]
    return server


def ini(path: Path) -> dict[str, dict[str, str]]:
    """PgBouncer's ini: section → key → value (';' starts a comment)."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split(";", 1)[0].strip()
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        elif "=" in line:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return sections


def readme_section() -> str:
    """The README's last section, "Deploying"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    _head, found, section = text.rpartition("\n## Deploying\n")
    assert found, "no Deploying section in README.md"
    assert "\n## " not in section, "Deploying is not the README's last section"
    return section


def cli_parser() -> argparse.ArgumentParser:
    """The `hotline` command's parser, as main() builds it (caught at parse_args)."""
    caught: list[argparse.ArgumentParser] = []

    class Caught(Exception):
        pass

    def catch(self: argparse.ArgumentParser, *_args: object, **_kwargs: object) -> None:
        caught.append(self)
        raise Caught

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", catch)
        with pytest.raises(Caught):
            cli.main([])
    return caught[0]


OPERATORS = frozenset({";", "&&", "||", "|", "&", ">", "<", "(", ")"})
# Words after which the shell expects a command.
COMMAND_AFTER = OPERATORS | {"until", "while", "if", "then", "else", "do", "!"}


def hotline_calls(command: str) -> Iterator[list[str]]:
    """The arguments of each `hotline` (or `hotline-admin`) command in a shell command
    line, also inside `sh -c '…'`; the metavariable PORT stands for a port."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = list(lexer)
    if words and PurePosixPath(words[0]).name == "sh" and "-c" in words:
        yield from hotline_calls(words[words.index("-c") + 1])
        return
    for at, word in enumerate(words):
        in_command_position = at == 0 or words[at - 1] in COMMAND_AFTER
        if in_command_position and PurePosixPath(word).name in ("hotline", "hotline-admin"):
            args = []
            for arg in words[at + 1 :]:
                if arg in OPERATORS:
                    break
                args.append(str(target_ports()[0]) if arg == "PORT" else arg)
            yield args


def readme_commands() -> Iterator[str]:
    """Every shell line of the section's code blocks and every inline code span."""
    section = readme_section()
    for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL):
        # A line ending inside quotes goes on: join them as the shell would read them.
        pending = ""
        for line in block.splitlines():
            pending = f"{pending}\n{line}" if pending else line
            try:
                shlex.split(pending, comments=True)
            except ValueError:
                continue
            yield pending
            pending = ""
        assert not pending, f"unterminated shell line: {pending}"
    outside = re.sub(r"```.*?```", "", section, flags=re.DOTALL)
    yield from (" ".join(span.split()) for span in re.findall(r"`([^`]+)`", outside))


def production_env(monkeypatch: pytest.MonkeyPatch, *files: Path) -> Settings:
    """Settings read from these env files (later ones override), as the units do."""
    for name in list(os.environ):
        if name.startswith("HOTLINE_"):
            monkeypatch.delenv(name)
    for path in files:
        for name, value in env_file(path).items():
            monkeypatch.setenv(name, value)
    return Settings()


# --- the tests ---------------------------------------------------------------------------


def test_every_setting_named_in_deploy_and_the_readme_section_exists() -> None:
    known = {f"HOTLINE_{name.upper()}" for name in Settings.model_fields}
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in DEPLOY.rglob("*") if p.is_file()}
    texts["README.md#deploying"] = readme_section()
    named = {(where, name) for where, text in texts.items() for name in SETTING.findall(text)}
    assert named, "no settings named at all"
    assert sorted((where, name) for where, name in named if name not in known) == []


def test_the_env_example_is_refused_until_its_placeholders_are_replaced(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert PLACEHOLDER in PLACEHOLDER_SECRETS
    with pytest.raises(ValidationError, match="placeholder"):
        production_env(monkeypatch, ENV_EXAMPLE)

    filled = tmp_path / "hotline.env"
    text = ENV_EXAMPLE.read_text().replace(f"HOTLINE_DATA_KEY={PLACEHOLDER}", "")
    filled.write_text(
        text.replace(PLACEHOLDER, "s3cr3t-Value-42") + f"HOTLINE_DATA_KEY={new_key()}\n"
    )
    settings = production_env(monkeypatch, filled)
    assert settings.environment == "production"
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert settings.database_pgbouncer is True
    assert settings.public_url is not None and settings.served_over_https
    assert settings.telegram_mode == "webhook"
    assert settings.media_url.startswith("s3://")
    media_store(settings)  # a store the service accepts

    # migrate.env, read after it: PostgreSQL itself, without the PgBouncer settings.
    direct = tmp_path / "migrate.env"
    direct.write_text(MIGRATE_ENV_EXAMPLE.read_text().replace(PLACEHOLDER, "s3cr3t-Value-42"))
    settings = production_env(monkeypatch, filled, direct)
    assert settings.database_pgbouncer is False
    assert ":5432/" in settings.database_url


def test_the_units_run_real_commands_on_the_ports_nginx_uses() -> None:
    parser = cli_parser()
    calls: dict[str, list[list[str]]] = {}
    for name, unit in units().items():
        for command in unit.get("Service", {}).get("ExecStart", []):
            calls.setdefault(name, []).extend(hotline_calls(command))
    assert [parser.parse_args(args).command for args in calls["hotline-migrate.service"]] == [
        "migrate"
    ]
    (serve,) = calls["hotline@.service"]
    ports = target_ports()
    assert ports, "hotline.target starts no server"
    upstream = {
        server.args[0]
        for upstreams in nginx_config(DEPLOY / "nginx" / "hotline.conf").find("upstream")
        for server in upstreams.find("server")
    }
    started = set()
    for port in ports:
        args = parser.parse_args([arg.replace("%i", str(port)) for arg in serve])
        assert (args.command, args.port) == ("serve", port)
        started.add(f"{args.host}:{args.port}")
    assert started == upstream
    # The processes believe nginx's X-Forwarded-For: it connects from that address.
    proxies = json.loads(env_file(ENV_EXAMPLE)["HOTLINE_TRUSTED_PROXIES"])
    trusted = Settings(trusted_proxies=proxies).trusted_proxies
    hosts = {ip_address(address.rsplit(":", 1)[0]) for address in upstream}
    assert all(any(host in network for network in trusted) for host in hosts)


def test_the_servers_are_sandboxed_and_wait_for_the_migration() -> None:
    server = units()["hotline@.service"]
    assert "hotline-migrate.service" in " ".join(server["Unit"]["Requires"])
    assert "hotline-migrate.service" in " ".join(server["Unit"]["After"])
    assert server["Unit"]["PartOf"] == ["hotline.target"]
    for name in ("hotline@.service", "hotline-migrate.service"):
        unit = service(name)
        assert unit["User"] == ["hotline"]
        assert unit["EnvironmentFile"][0] == "/etc/hotline/hotline.env"
        for key, value in {
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "PrivateTmp": "yes",
            "ProtectHome": "yes",
        }.items():
            assert unit[key] == [value], (name, key)
    assert service("hotline@.service")["Restart"] == ["always"]
    assert service("hotline-migrate.service")["EnvironmentFile"][1] == ("-/etc/hotline/migrate.env")
    # Under ProtectSystem=strict only the state directory is writable: the spool, the
    # local media folder and the working directory must be in it.
    unit = service("hotline@.service")
    writable = [Path("/var/lib") / d for d in " ".join(unit["StateDirectory"]).split()]
    env = env_file(ENV_EXAMPLE)
    for path in (env["HOTLINE_SPOOL_DIR"], env["HOTLINE_MEDIA_DIR"], *unit["WorkingDirectory"]):
        assert any(Path(path).is_relative_to(w) for w in writable), path


def test_hotline_admin_runs_the_binary_with_the_units_settings() -> None:
    script = (DEPLOY / "hotline-admin").read_text()
    (binary,) = {shlex.split(command)[0] for command in service("hotline@.service")["ExecStart"]}
    assert f'{binary} "$@"' in script
    for env in service("hotline-migrate.service")["EnvironmentFile"]:
        assert f"EnvironmentFile={env}" in script
    assert "--uid=hotline" in script


def test_nginx_takes_the_bodies_the_service_takes() -> None:
    server = https_server()
    largest = nginx_size(server.value("client_max_body_size"))
    assert upload_limit(Settings()) <= largest < upload_limit(Settings()) + 1024 * 1024
    hooks = {
        location.args[1]: location
        for location in server.find("location")
        if location.args[0] == "=" and location.args[1].endswith("/webhook")
    }
    assert set(hooks) == {telegram.WEBHOOK_PATH, zalo_oa.WEBHOOK_PATH, zalo_bot.WEBHOOK_PATH}
    for location in hooks.values():
        assert nginx_size(location.value("client_max_body_size")) == WEBHOOK_LIMIT
        # Longer than the service waits before it answers 503 itself.
        assert nginx_seconds(location.value("proxy_read_timeout")) > STORE_LIMIT
    # A POST that reached a process is never sent to another.
    assert "non_idempotent" not in server.value("proxy_next_upstream")
    headers = {tuple(d.args[:1]) for d in server.find("proxy_set_header")}
    assert {("X-Forwarded-For",), ("X-Forwarded-Proto",), ("Host",)} <= headers


def test_pgbouncer_pools_transactions_for_all_the_processes() -> None:
    config = ini(DEPLOY / "pgbouncer" / "pgbouncer.ini")["pgbouncer"]
    assert config["pool_mode"] == "transaction"
    pool = create_engine("postgresql+asyncpg://hotline@localhost/hotline").sync_engine.pool
    assert isinstance(pool, QueuePool)
    per_process = pool.size() + pool._max_overflow
    assert int(config["max_client_conn"]) >= len(target_ports()) * per_process
    pooled = int(config["default_pool_size"]) + int(config["reserve_pool_size"])
    assert pooled <= int(config["max_db_connections"])
    userlist = (DEPLOY / "pgbouncer" / "userlist.txt.example").read_text()
    assert re.search(r'^"hotline" "SCRAM-SHA-256\$', userlist, re.MULTILINE)


def test_the_readme_section_names_real_commands_and_files() -> None:
    parser = cli_parser()
    parsed = []
    for command in readme_commands():
        for args in hotline_calls(command):
            if args:  # `hotline-admin` alone names the script
                parsed.append(parser.parse_args(args).command)
        for path in re.findall(r"\bdeploy/[\w.@/-]*[\w@]", command):
            assert (ROOT / path).exists(), path
    assert {"serve", "migrate", "import-units", "create-user"} <= set(parsed)
    section = readme_section()
    for port in target_ports():
        assert f"hotline@{port}" in section


def test_make_run_makes_a_development_key_once_readable_by_its_owner_alone(
    tmp_path: Path,
) -> None:
    makefile = (ROOT / "Makefile").read_text()
    (recipe,) = re.findall(r"^DEV_KEY = (.+)$", makefile, flags=re.MULTILINE)
    assert "$(DEV_KEY)" in makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    command = recipe.replace("$(BIN)", str(ROOT / ".venv" / "bin"))
    (tmp_path / "var").mkdir()
    make_key = ["/bin/bash", "-c", command]
    subprocess.run(make_key, cwd=tmp_path, check=True)  # noqa: S603 - the Makefile's own line
    key_file = tmp_path / "var" / "data.key"
    first = key_file.read_text()
    assert key_file.stat().st_mode & 0o777 == 0o600
    subprocess.run(make_key, cwd=tmp_path, check=True)  # noqa: S603
    assert key_file.read_text() == first, "a second `make run` must keep the key"
    settings = Settings(environment="development", data_key=None, data_key_file=key_file)
    assert settings.keyring().current_id
