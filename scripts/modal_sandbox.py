#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.10"
# dependencies = [
#     "modal==1.6.4",
#     "click>=8.1,<9",
# ]
# ///
"""Offload's bridge to Modal sandboxes: a thin, stateless wrapper over the Modal SDK.

Offload embeds this file and runs it as ``uv run @modal_sandbox.py <command> ...`` (uv
installs the dependencies declared above). The Rust side owns every decision: image
caching, retries, fallbacks, which sandbox runs which batch. Each command here does one
Modal operation and reports the result; nothing is remembered between calls.

Output contract
    stdout carries only the results named below; every progress and diagnostic line
    (including Modal's own build output) goes to stderr.

Exit codes
    0   success (``exec``: the remote command's own exit code instead)
    1   the Modal operation failed (image build error, unknown sandbox, network, ...)
    2   bad arguments or a missing local input (click usage error; retrying cannot help)
    3   Modal credentials missing or rejected: run ``modal token new``
    125 ``exec`` only: the command could not be run at all (unknown or terminated sandbox,
        network, ...); credential problems still exit 3

Commands
    Offload runs ``prepare`` exactly as configured and passes what it has in environment
    variables, which the options below default to: OFFLOAD_CONTEXT_DIR (--context-dir),
    OFFLOAD_COPY_DIRS (one LOCAL:REMOTE a line; --copy-dir), OFFLOAD_SANDBOX_INIT_CMD,
    OFFLOAD_SANDBOX_PROJECT_ROOT, OFFLOAD_BASE_IMAGE (--from-base-image),
    OFFLOAD_PATCH_FILE and OFFLOAD_POST_PATCH_CMD. An option given on the command line
    wins over its variable.

    prepare [DOCKERFILE] [--include-cwd] [--copy-dir LOCAL:REMOTE]... [--sandbox-init-cmd CMD]
            [--context-dir DIR] [--sandbox-project-root DIR]
        Full build. The base is DOCKERFILE built with DIR as its context (a relative
        DOCKERFILE is looked up in DIR first, then in the current directory), or, without
        one, a Debian slim image with Python and pytest whose working directory is the
        project root. ``--include-cwd`` adds DIR (the current directory when no
        ``--context-dir`` is given) at the project root; each ``--copy-dir`` adds LOCAL at
        REMOTE (relative REMOTEs are under the project root). A ``.dockerignore`` at the
        top of an added directory is honoured. ``--sandbox-init-cmd`` then runs as a build
        step. Prints the image ID (``im-...``) as the last stdout line. ``--cached`` is
        accepted (and ignored) for configs written for older versions.

    prepare [DOCKERFILE] [--include-cwd] --from-base-image IMAGE_ID [--patch-file PATH]
            [--copy-dir LOCAL:REMOTE]... [--post-patch-cmd CMD] [--sandbox-project-root DIR]
        Incremental build on top of an existing image (DOCKERFILE and ``--include-cwd``
        are accepted and ignored: they stay in the configured prepare command, and the
        base image already holds what they built; the other
        full-build options are errors here). The patch is added at
        /tmp/offload.patch and applied with ``offload apply-diff /tmp/offload.patch
        --project-root DIR`` (so the base image needs ``offload`` on PATH); then each
        ``--copy-dir`` is added as in a full build (Offload hands an incremental build
        only the run's own files, such as its cargo test archive); then
        ``--post-patch-cmd`` runs (with OFFLOAD_PATCH_FILE=/tmp/offload.patch when a patch
        was given); then the patch is removed. Prints the new image ID as the last stdout
        line. A failing step fails the build (exit 1).

    create IMAGE_ID [--cpu N] [--memory-gb N] [--env K=V]... [--timeout SECS]
           [--workdir DIR] [--experimental-options JSON]
        Starts a sandbox from the image (alive for ``--timeout`` seconds, default 3600)
        and prints its ID (``sb-...``) on stdout.

    exec SANDBOX_ID COMMAND
        Runs ``sh -c COMMAND`` in the sandbox, streams its stdout and stderr to ours as
        they arrive and exits with its exit code.

    download SANDBOX_ID REMOTE:LOCAL...
        Copies each remote file (or directory, recursively) to the local path, creating
        local parent directories. Relative REMOTE paths are relative to the sandbox's
        working directory. Every pair is attempted; any failure (for example a missing
        remote file) makes the exit code 1.

    destroy SANDBOX_ID
        Terminates the sandbox.

    destroy-many [SANDBOX_ID...]
        Terminates every sandbox named as an argument, or, without arguments, every ID
        read from stdin (one per line, blank lines ignored), concurrently. Continues past
        individual failures; prints the IDs that could not be terminated on stdout, one
        per line, and exits 1 if there are any.

The ``modal`` package is imported only inside the commands, so ``--help`` and argument
errors never need credentials, the network or even the package itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import posixpath
import shlex
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    import modal

T = TypeVar("T")

# Modal app names (apps are looked up and created when missing).
APP_FULL_BUILD = "offload-sandbox"
APP_DOCKERFILE_BUILD = "offload-dockerfile-sandbox"
APP_INCREMENTAL_BUILD = "offload-checkpoint-sandbox"
APP_SANDBOXES = "offload-sandbox"

# Where an incremental build puts the patch inside the image.
PATCH_REMOTE_PATH = "/tmp/offload.patch"
# Python of the default image (used when no Dockerfile is given).
DEFAULT_PYTHON_VERSION = "3.12"
# Default lifetime of a sandbox, in seconds.
DEFAULT_SANDBOX_TIMEOUT_SECS = 3600
# At most this many sandboxes are terminated at once by `destroy-many`.
MAX_CONCURRENT_TERMINATIONS = 32

EXIT_MODAL_FAILED = 1
EXIT_CREDENTIALS = 3
EXIT_EXEC_FAILED = 125

CREDENTIALS_HINT = (
    "run `modal token new` to log in (or set `MODAL_TOKEN_ID` and `MODAL_TOKEN_SECRET`, "
    "as in CI)"
)


def log(message: str) -> None:
    """Writes one diagnostic line to stderr."""
    print(message, file=sys.stderr, flush=True)


class ScriptError(click.ClickException):
    """A failed Modal operation: `Error: <message>` on stderr, exit 1."""

    exit_code = EXIT_MODAL_FAILED


class ExecError(ScriptError):
    """`exec` could not run the command at all: exit 125."""

    exit_code = EXIT_EXEC_FAILED


class CredentialsError(ScriptError):
    """Modal credentials are missing or rejected: exit 3."""

    exit_code = EXIT_CREDENTIALS

    def __init__(self, detail: str) -> None:
        super().__init__(f"{detail}; {CREDENTIALS_HINT}")


def require_credentials() -> None:
    """Fails fast, before touching Modal, when no credentials can possibly be configured.

    Only the obvious case is caught here (no token or OAuth variables and no Modal config
    file); anything subtler is left to the SDK, whose authentication errors are translated
    by `modal_errors`.
    """
    if os.environ.get("MODAL_IS_REMOTE") == "1":
        return  # inside a Modal container, where the platform provides credentials
    if any(
        name.startswith(("MODAL_TOKEN_", "MODAL_OAUTH_")) and value
        for name, value in os.environ.items()
    ):
        return
    config_path = os.environ.get("MODAL_CONFIG_PATH") or os.path.expanduser("~/.modal.toml")
    if os.path.isfile(config_path):
        return
    raise CredentialsError(
        "no Modal credentials found: `MODAL_TOKEN_ID`/`MODAL_TOKEN_SECRET` are not set "
        f"and `{config_path}` does not exist"
    )


@contextlib.contextmanager
def modal_errors(action: str, error: type[ScriptError] = ScriptError) -> Iterator[None]:
    """Turns exceptions raised while talking to Modal into one clear error line.

    `action` says what was being done (`"create a sandbox from image `im-1`"`).
    """
    import modal.exception

    try:
        yield
    except click.ClickException:
        raise
    except modal.exception.AuthError as exc:
        detail = str(exc).rstrip(". ")
        raise CredentialsError(f"Modal rejected the credentials while trying to {action}: {detail}") from exc
    except modal.exception.NotFoundError as exc:
        raise error(f"failed to {action}: not found: {exc}") from exc
    except Exception as exc:  # every other failure becomes a message, not a traceback
        raise error(f"failed to {action}: {type(exc).__name__}: {exc}") from exc


def run_async(action: str, body: Callable[[], Awaitable[T]], error: type[ScriptError] = ScriptError) -> T:
    """Checks credentials, then runs `body` on a fresh event loop with errors translated."""
    require_credentials()
    with modal_errors(action, error):
        return asyncio.run(_awaited(body))


async def _awaited(body: Callable[[], Awaitable[T]]) -> T:
    return await body()


def print_result(value: str) -> None:
    """Prints a result (image or sandbox ID) as the last line on stdout."""
    sys.stdout.write(value + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------
# Argument parsing. Option callbacks: each checks and converts the raw strings, raising click's usage
# errors (exit 2) before anything contacts Modal.


def parse_copy_dirs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[tuple[Path, str]]:
    """`LOCAL:REMOTE` (split at the first `:`), LOCAL an existing local directory. Without
    options, the lines of OFFLOAD_COPY_DIRS (one `LOCAL:REMOTE` a line)."""
    if not values:
        values = tuple(line for line in os.environ.get("OFFLOAD_COPY_DIRS", "").splitlines() if line.strip())
    parsed: list[tuple[Path, str]] = []
    for text in values:
        local, sep, remote = text.partition(":")
        if not sep:
            raise click.BadParameter(f"`{text}` is not of the form LOCAL:REMOTE (no `:`)", ctx, param)
        if not local or not remote:
            raise click.BadParameter(f"`{text}` has an empty LOCAL or REMOTE part", ctx, param)
        if not Path(local).is_dir():
            raise click.BadParameter(f"local directory `{local}` (in `{text}`) does not exist", ctx, param)
        parsed.append((Path(local), remote))
    return parsed


def parse_download_pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[tuple[str, Path]]:
    """`REMOTE:LOCAL` (split at the first `:`), both parts non-empty."""
    parsed: list[tuple[str, Path]] = []
    for text in values:
        remote, sep, local = text.partition(":")
        if not sep:
            raise click.BadParameter(f"`{text}` is not of the form REMOTE:LOCAL (no `:`)", ctx, param)
        if not remote:
            raise click.BadParameter(f"empty remote path in `{text}`", ctx, param)
        if not local:
            raise click.BadParameter(f"empty local path in `{text}`", ctx, param)
        parsed.append((remote, Path(local)))
    return parsed


def parse_env(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str | None]:
    """`KEY=VALUE` (split at the first `=`), KEY non-empty."""
    parsed: dict[str, str | None] = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"`{text}` is not of the form KEY=VALUE", ctx, param)
        parsed[key] = value
    return parsed


def parse_json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any] | None:
    """A JSON object given as text."""
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"`{value}` is not valid JSON: {exc}", ctx, param) from exc
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"`{value}` is not a JSON object (expected `{{...}}`)", ctx, param)
    return parsed


def absolute_posix(path: str, param: str) -> str:
    """Checks that a path inside the sandbox is absolute."""
    if not posixpath.isabs(path):
        raise click.BadParameter(f"`{path}` must be an absolute path inside the sandbox", param_hint=param)
    return posixpath.normpath(path)


def dockerignore(directory: Path) -> modal.FilePatternMatcher | list[str]:
    """The ignore rules of `<directory>/.dockerignore`, or none."""
    import modal

    ignore_file = directory / ".dockerignore"
    if ignore_file.is_file():
        log(f"Using ignore patterns from {ignore_file}")
        return modal.FilePatternMatcher.from_file(ignore_file)
    return []


def find_dockerfile(dockerfile: str, context_dir: Path | None) -> Path:
    """Resolves the Dockerfile: absolute as given, else in the context dir, else in the cwd."""
    given = Path(dockerfile)
    candidates = [given] if given.is_absolute() else [
        *([context_dir / given] if context_dir is not None else []),
        Path.cwd() / given,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(f"`{c}`" for c in candidates)
    raise click.BadParameter(f"Dockerfile `{dockerfile}` not found (looked at {looked})", param_hint="DOCKERFILE")


# ---------------------------------------------------------------------------------------
# Commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Offload's thin wrapper over the Modal SDK (see the module docstring for the contract)."""
    sys.dont_write_bytecode = True


@cli.command()
@click.argument("dockerfile", required=False)
@click.option("--include-cwd", is_flag=True, help="Add the context dir (or the cwd) at the project root.")
@click.option(
    "--copy-dir",
    "copy_dirs",
    multiple=True,
    metavar="LOCAL:REMOTE",
    callback=parse_copy_dirs,
    help="Add a local directory to the image (repeatable). Default: the lines of OFFLOAD_COPY_DIRS.",
)
@click.option(
    "--sandbox-init-cmd",
    metavar="CMD",
    envvar="OFFLOAD_SANDBOX_INIT_CMD",
    help="Shell command run as a build step after the files are added.",
)
@click.option(
    "--context-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    envvar="OFFLOAD_CONTEXT_DIR",
    help="Build context of the Dockerfile; what --include-cwd adds. Default: the cwd.",
)
@click.option(
    "--sandbox-project-root",
    default="/app",
    show_default=True,
    metavar="DIR",
    envvar="OFFLOAD_SANDBOX_PROJECT_ROOT",
    help="Project root inside the sandbox.",
)
@click.option(
    "--from-base-image",
    metavar="IMAGE_ID",
    envvar="OFFLOAD_BASE_IMAGE",
    help="Incremental build on top of this image.",
)
@click.option(
    "--patch-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="OFFLOAD_PATCH_FILE",
    help="Patch applied with `offload apply-diff` (needs --from-base-image).",
)
@click.option(
    "--post-patch-cmd",
    metavar="CMD",
    envvar="OFFLOAD_POST_PATCH_CMD",
    help="Shell command run as a build step after the patch (needs --from-base-image).",
)
@click.option("--cached", is_flag=True, hidden=True, help="Accepted for older configs; does nothing.")
def prepare(
    dockerfile: str | None,
    include_cwd: bool,
    copy_dirs: list[tuple[Path, str]],
    sandbox_init_cmd: str | None,
    context_dir: Path | None,
    sandbox_project_root: str,
    from_base_image: str | None,
    patch_file: Path | None,
    post_patch_cmd: str | None,
    cached: bool,
) -> None:
    """Build an image and print its ID as the last stdout line."""
    root = absolute_posix(sandbox_project_root, "--sandbox-project-root")
    if from_base_image is None:
        for given, name in ((patch_file, "--patch-file"), (post_patch_cmd, "--post-patch-cmd")):
            if given is not None:
                raise click.UsageError(f"`{name}` needs `--from-base-image` (it patches an existing image)")
        dockerfile_path = find_dockerfile(dockerfile, context_dir) if dockerfile is not None else None
        remote_dirs = [(local, posixpath.join(root, remote)) for local, remote in copy_dirs]
        image_id = run_async(
            "build the image",
            lambda: build_full(dockerfile_path, include_cwd, remote_dirs, sandbox_init_cmd, context_dir, root),
        )
    else:
        # Offload runs the configured prepare command as written for both kinds of
        # build, so the words that describe the base (a Dockerfile, --include-cwd) come
        # along here too: the base image already holds what they built.
        for described, option in ((dockerfile is not None, "DOCKERFILE"), (include_cwd, "--include-cwd")):
            if described:
                log(f"ignoring {option}: an incremental build starts from `{from_base_image}`, which already holds it")
        conflicting = [
            name
            for given, name in (
                (sandbox_init_cmd is not None, "--sandbox-init-cmd"),
                (context_dir is not None, "--context-dir"),
            )
            if given
        ]
        if conflicting:
            raise click.UsageError(
                f"`--from-base-image` builds on an existing image and cannot be combined with "
                f"{', '.join(f'`{c}`' for c in conflicting)}"
            )
        base = from_base_image
        layer_dirs = [(local, posixpath.join(root, remote)) for local, remote in copy_dirs]
        image_id = run_async(
            f"build on base image `{base}`",
            lambda: build_incremental(base, patch_file, layer_dirs, post_patch_cmd, root),
        )
    print_result(image_id)


async def build_full(
    dockerfile: Path | None,
    include_cwd: bool,
    copy_dirs: Sequence[tuple[Path, str]],
    sandbox_init_cmd: str | None,
    context_dir: Path | None,
    root: str,
) -> str:
    """Builds the full image and returns its ID."""
    image = full_image(dockerfile, include_cwd, copy_dirs, sandbox_init_cmd, context_dir, root)
    return await materialise(image, APP_DOCKERFILE_BUILD if dockerfile is not None else APP_FULL_BUILD)


def full_image(
    dockerfile: Path | None,
    include_cwd: bool,
    copy_dirs: Sequence[tuple[Path, str]],
    sandbox_init_cmd: str | None,
    context_dir: Path | None,
    root: str,
) -> modal.Image:
    """Describes the full image (no Modal call: images are built lazily)."""
    import modal

    context = context_dir if context_dir is not None else Path.cwd()
    image: modal.Image
    if dockerfile is not None:
        log(f"Building base image from {dockerfile} (context {context})")
        image = modal.Image.from_dockerfile(dockerfile, context_dir=context)
    else:
        log(f"Building the default image (Debian slim, Python {DEFAULT_PYTHON_VERSION}, pytest)")
        image = modal.Image.debian_slim(python_version=DEFAULT_PYTHON_VERSION).pip_install("pytest").workdir(root)
    if include_cwd:
        log(f"Adding {context} as {root}")
        image = image.add_local_dir(context, root, copy=True, ignore=dockerignore(context))
    for local, remote in copy_dirs:
        log(f"Adding {local} as {remote}")
        image = image.add_local_dir(local, remote, copy=True, ignore=dockerignore(local))
    if sandbox_init_cmd is not None:
        log(f"Running sandbox_init_cmd: {sandbox_init_cmd}")
        image = image.run_commands(sandbox_init_cmd)
    return image


async def build_incremental(
    base_image_id: str,
    patch_file: Path | None,
    copy_dirs: Sequence[tuple[Path, str]],
    post_patch_cmd: str | None,
    root: str,
) -> str:
    """Builds an image on top of `base_image_id` and returns its ID."""
    import modal

    log(f"Building on base image {base_image_id}")
    base = await modal.Image.from_id.aio(base_image_id)
    return await materialise(patched_image(base, patch_file, copy_dirs, post_patch_cmd, root), APP_INCREMENTAL_BUILD)


def patched_image(
    base: modal.Image,
    patch_file: Path | None,
    copy_dirs: Sequence[tuple[Path, str]],
    post_patch_cmd: str | None,
    root: str,
) -> modal.Image:
    """Describes `base` with the patch applied, the copy dirs (absolute REMOTEs) added and
    `post_patch_cmd` run (no Modal call)."""
    image = base
    if patch_file is not None:
        log(f"Applying {patch_file} in {root}")
        image = image.add_local_file(patch_file, PATCH_REMOTE_PATH, copy=True).run_commands(
            f"offload apply-diff {PATCH_REMOTE_PATH} --project-root {shlex.quote(root)}"
        )
    for local, remote in copy_dirs:
        log(f"Adding {local} as {remote}")
        image = image.add_local_dir(local, remote, copy=True, ignore=dockerignore(local))
    if post_patch_cmd is not None:
        log(f"Running post_patch_cmd: {post_patch_cmd}")
        env: dict[str, str | None] | None = {"OFFLOAD_PATCH_FILE": PATCH_REMOTE_PATH} if patch_file is not None else None
        image = image.run_commands(post_patch_cmd, env=env)
    if patch_file is not None:
        image = image.run_commands(f"rm -f {PATCH_REMOTE_PATH}")
    return image


async def materialise(image: modal.Image, app_name: str) -> str:
    """Builds `image` in the named app, with Modal's build output on stderr; returns its ID."""
    import modal

    with contextlib.redirect_stdout(sys.stderr), modal.enable_output():
        app = await modal.App.lookup.aio(app_name, create_if_missing=True)
        built = await image.build.aio(app)
    image_id = built.object_id
    log(f"Image ready: {image_id}")
    return image_id


@cli.command()
@click.argument("image_id")
@click.option("--cpu", type=click.FloatRange(min=0, min_open=True), help="CPU cores reserved for the sandbox.")
@click.option("--memory-gb", type=click.FloatRange(min=0, min_open=True), help="Memory reserved, in GiB.")
@click.option(
    "--env",
    "env",
    multiple=True,
    metavar="KEY=VALUE",
    callback=parse_env,
    help="Environment variable of the sandbox (repeatable).",
)
@click.option(
    "--timeout",
    type=click.IntRange(min=1),
    default=DEFAULT_SANDBOX_TIMEOUT_SECS,
    show_default=True,
    metavar="SECS",
    help="Lifetime of the sandbox; Modal terminates it afterwards.",
)
@click.option("--workdir", metavar="DIR", help="Working directory of the sandbox. Default: the image's.")
@click.option(
    "--experimental-options",
    metavar="JSON",
    callback=parse_json_object,
    help="JSON object passed to Modal as experimental options.",
)
def create(
    image_id: str,
    cpu: float | None,
    memory_gb: float | None,
    env: dict[str, str | None],
    timeout: int,
    workdir: str | None,
    experimental_options: dict[str, Any] | None,
) -> None:
    """Start a sandbox from IMAGE_ID and print its ID on stdout."""
    if workdir is not None:
        workdir = absolute_posix(workdir, "--workdir")
    memory_mib = math.ceil(memory_gb * 1024) if memory_gb is not None else None

    async def body() -> str:
        import modal

        app = await modal.App.lookup.aio(APP_SANDBOXES, create_if_missing=True)
        try:
            image = await modal.Image.from_id.aio(image_id)
        except modal.exception.NotFoundError as exc:
            raise ScriptError(
                f"image `{image_id}` not found ({exc}); it may have been garbage collected: "
                "build it again (`offload run --no-cache`)"
            ) from exc
        sandbox = await modal.Sandbox.create.aio(
            app=app,
            image=image,
            timeout=timeout,
            workdir=workdir,
            cpu=cpu,
            memory=memory_mib,
            env=env or None,
            experimental_options=experimental_options,
        )
        return sandbox.object_id

    sandbox_id = run_async(f"create a sandbox from image `{image_id}`", body)
    log(f"Sandbox ready: {sandbox_id}")
    print_result(sandbox_id)


@cli.command(name="exec")
@click.argument("sandbox_id")
@click.argument("command")
def exec_command(sandbox_id: str, command: str) -> NoReturn:
    """Run `sh -c COMMAND` in the sandbox, streaming its output; exit with its exit code."""

    async def body() -> int:
        import modal

        sandbox = await modal.Sandbox.from_id.aio(sandbox_id)
        process = await sandbox.exec.aio("sh", "-c", command, text=False)
        await asyncio.gather(
            pump(process.stdout, sys.stdout.buffer),
            pump(process.stderr, sys.stderr.buffer),
        )
        return await process.wait.aio()

    code = run_async(f"run a command in sandbox `{sandbox_id}`", body, ExecError)
    sys.exit(code)


async def pump(stream: modal.io_streams.StreamReader[bytes], out: IO[bytes]) -> None:
    """Copies a remote output stream to a local one chunk by chunk, as it arrives."""
    async for chunk in stream:
        out.write(chunk)
        out.flush()


@cli.command()
@click.argument("sandbox_id")
@click.argument("paths", nargs=-1, required=True, metavar="REMOTE:LOCAL...", callback=parse_download_pairs)
def download(sandbox_id: str, paths: list[tuple[str, Path]]) -> None:
    """Copy files out of the sandbox: each of PATHS is REMOTE:LOCAL."""

    async def body() -> list[str]:
        import modal

        sandbox = await modal.Sandbox.from_id.aio(sandbox_id)
        workdir: str | None = None
        failures: list[str] = []
        for remote, local in paths:
            if not posixpath.isabs(remote):
                if workdir is None:
                    workdir = await sandbox_workdir(sandbox)
                remote_abs = posixpath.join(workdir, remote)
            else:
                remote_abs = remote
            log(f"Downloading {remote_abs} to {local}")
            try:
                await copy_out(sandbox, remote_abs, local)
            except modal.exception.SandboxFilesystemNotFoundError:
                failures.append(f"`{remote_abs}` does not exist in sandbox `{sandbox_id}`")
            except (modal.exception.SandboxFilesystemError, OSError) as exc:
                failures.append(f"cannot copy `{remote_abs}` to `{local}`: {type(exc).__name__}: {exc}")
        return failures

    failures = run_async(f"download from sandbox `{sandbox_id}`", body)
    if failures:
        raise ScriptError("download failed: " + "; ".join(failures))


async def sandbox_workdir(sandbox: modal.Sandbox) -> str:
    """The working directory commands start in, inside the sandbox."""
    process = await sandbox.exec.aio("pwd")
    output = await process.stdout.read.aio()
    await process.wait.aio()
    workdir = output.strip()
    return workdir if posixpath.isabs(workdir) else "/"


async def copy_out(sandbox: modal.Sandbox, remote: str, local: Path) -> None:
    """Copies a remote file, or a directory recursively, to `local`."""
    info = await sandbox.filesystem.stat.aio(remote)
    if info.is_dir():
        local.mkdir(parents=True, exist_ok=True)
        for entry in await sandbox.filesystem.list_files.aio(remote):
            await copy_out(sandbox, posixpath.join(remote, entry.name), local / entry.name)
    elif info.is_file():
        local.parent.mkdir(parents=True, exist_ok=True)
        await sandbox.filesystem.copy_to_local.aio(remote, local)
    else:
        log(f"Skipping {remote}: neither a regular file nor a directory")


@cli.command()
@click.argument("sandbox_id")
def destroy(sandbox_id: str) -> None:
    """Terminate the sandbox."""

    async def body() -> None:
        import modal

        sandbox = await modal.Sandbox.from_id.aio(sandbox_id)
        await sandbox.terminate.aio()

    run_async(f"terminate sandbox `{sandbox_id}`", body)
    log(f"Terminated sandbox {sandbox_id}")


@cli.command(name="destroy-many")
@click.argument("sandbox_ids", nargs=-1)
def destroy_many(sandbox_ids: tuple[str, ...]) -> None:
    """Terminate many sandboxes: SANDBOX_IDS, or the IDs on stdin (one per line).

    Prints the IDs that could not be terminated on stdout; exits 1 if there are any.
    """
    given = sandbox_ids if sandbox_ids else tuple(sys.stdin.read().splitlines())
    ids = list(dict.fromkeys(i.strip() for i in given if i.strip()))
    if not ids:
        log("destroy-many: no sandbox IDs given; nothing to do")
        return
    log(f"destroy-many: terminating {len(ids)} sandbox(es)")

    async def body() -> list[str]:
        import modal

        limit = asyncio.Semaphore(MAX_CONCURRENT_TERMINATIONS)

        async def terminate(sandbox_id: str) -> BaseException | None:
            async with limit:
                try:
                    sandbox = await modal.Sandbox.from_id.aio(sandbox_id)
                    await sandbox.terminate.aio()
                except Exception as exc:
                    return exc
                return None

        results = await asyncio.gather(*(terminate(i) for i in ids))
        failed: list[str] = []
        for sandbox_id, error in zip(ids, results):
            if isinstance(error, modal.exception.AuthError):
                raise error  # the same for every ID: report it once, as a credentials error
            if error is not None:
                log(f"Failed to terminate sandbox {sandbox_id}: {type(error).__name__}: {error}")
                failed.append(sandbox_id)
        return failed

    failed = run_async("terminate sandboxes", body)
    log(f"destroy-many: {len(ids) - len(failed)} terminated, {len(failed)} failed")
    for sandbox_id in failed:
        print_result(sandbox_id)
    if failed:
        raise ScriptError(f"{len(failed)} of {len(ids)} sandbox(es) could not be terminated")


if __name__ == "__main__":
    cli()
