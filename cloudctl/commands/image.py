"""``cloudctl image ...``: the inventory's Talos image (schematic, asset URLs, download)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..cli import EXIT_CODES, _load, format_option, handle_errors, inventory_option


@click.group()
def image() -> None:
    """Talos image: schematic ID, asset URLs, and downloading kernel/initramfs."""


@image.command(epilog=EXIT_CODES)
@inventory_option
@format_option
@handle_errors
def info(inventory_path: Path, output_format: str) -> None:
    """Schematic ID (computed offline as the Image Factory does) and the asset URLs."""
    from ..render.image import asset_urls
    from ..render.schematic import schematic_for

    inv = _load(inventory_path).inventory
    urls = asset_urls(inv)
    data = {
        "schematic": schematic_for(inv).id,
        **{k: v for k, v in vars(urls).items() if isinstance(v, str) and v},
    }
    if output_format == "json":
        click.echo(json.dumps(data, sort_keys=True))
    else:
        for k, v in data.items():
            click.echo(f"{k}: {v}")


@image.command(epilog=EXIT_CODES)
@inventory_option
@click.option(
    "--cache",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Asset cache [default: $XDG_CACHE_HOME/cloudctl/assets].",
)
@click.option("--factory-url", default=None, help="Image Factory [default: the inventory's].")
@click.option("--timeout", type=float, default=60.0, show_default=True)
@click.option("--disk", is_flag=True,
              help="Fetch the xz-compressed metal disk image (what install-ssh writes) "
                   "instead of kernel + initramfs.")
@format_option
@handle_errors
def fetch(
    inventory_path: Path,
    cache: Path | None,
    factory_url: str | None,
    timeout: float,
    disk: bool,
    output_format: str,
) -> None:
    """Register the schematic with the Image Factory and download kernel + initramfs (with
    --disk: the metal disk image, metal-<arch>.raw.xz).

    The factory must return the schematic ID cloudctl computed offline. Downloads resume from a
    partial file (HTTP Range) and are cached per schematic and version. The public factory
    publishes no checksums: the SHA-256 is recorded after download and verified on every later
    fetch (this detects cache corruption, not a compromised download).
    """
    from ..boot.assets import disk_image_files, fetch_assets

    inv = _load(inventory_path).inventory
    last: dict[str, int] = {}

    def progress(name: str, done: int, total: int | None) -> None:
        if output_format == "json" or not sys.stderr.isatty():
            return
        pct = f"{100 * done // total}%" if total else f"{done} B"
        if last.get(name) != done:
            last[name] = done
            click.echo(f"\r{name}: {pct}", nl=False, err=True)

    got = fetch_assets(
        inv, cache=cache, factory_url=factory_url, timeout=timeout, progress=progress,
        files=disk_image_files(inv.image.arch) if disk else None,
    )
    if output_format == "json":
        click.echo(
            json.dumps(
                {
                    "schematic": got.schematic_id,
                    "version": got.version,
                    "arch": got.arch,
                    "directory": str(got.directory),
                    "assets": {
                        n: {
                            "path": str(a.path),
                            "sha256": a.sha256,
                            "size": a.size,
                            "checksum": a.checksum,
                            "downloaded": a.downloaded,
                        }
                        for n, a in sorted(got.assets.items())
                    },
                },
                sort_keys=True,
            )
        )
        return
    if last:
        click.echo("", err=True)
    for n, a in sorted(got.assets.items()):
        how = "downloaded" if a.downloaded else "cached"
        click.echo(
            f"{n}: {a.path} ({a.size} bytes, sha256 {a.sha256[:16]}…, {how}, "
            f"checksum: {a.checksum})"
        )


COMMANDS = [image]
