"""``interest-stream models export``: the ONNX export of the sentence encoder."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from streams.cli.options import effective_settings


@click.group("models")
def models_group() -> None:
    """Model artefacts: the ONNX encoder."""


@models_group.command("export")
@click.option("--out", type=click.Path(file_okay=False), help="Cache folder of the export.")
@click.option("--force", is_flag=True, help="Export again even if a current export exists.")
def export(out: str | None, force: bool) -> None:
    """Export all-MiniLM-L6-v2 to ONNX (needs the `train` extra), cached.

    Also builds the fused fp32, int8 and fp16 graphs beside it
    (`models.encoder.variants`), so runtime images, which have no ``onnx``
    package, find every ``encoder_precision`` prebuilt.
    """
    from models.encoder import ensure_exported
    from models.encoder.variants import build_variants

    settings = effective_settings()
    cache = Path(out or settings.encoder_cache) if (out or settings.encoder_cache) else None
    if force and cache is not None and cache.exists():
        shutil.rmtree(cache)
    artifact = ensure_exported(cache)
    for precision, path in build_variants(artifact).items():
        click.echo(f"{precision}: {path}", err=True)
    click.echo(str(artifact))
