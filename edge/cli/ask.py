"""The `ask` command: one question about a spoken clip, pictures or a camera frame."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge.cli import options


@click.command()
@click.argument("question", required=False, default="")
@click.option("-a", "--audio", "audio_file", type=click.Path(path_type=Path), help="WAV, FLAC or MP3 file, up to 30 s.")
@click.option(
    "-i",
    "--image",
    "image_files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A picture (PNG, JPEG, WebP, GIF, BMP); repeat for more.",
)
@click.option(
    "--camera",
    help="Take one frame: a camera index (0), /dev/videoN, 'picamera2', a video file or a folder of images.",
)
@options.image_tokens
@options.load_options(model_help=options.GEMMA4_MODEL_HELP)
@click.option("-n", "--max-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@options.as_json
def ask(
    question,
    audio_file,
    image_files,
    camera,
    image_tokens,
    load,
    max_tokens,
    as_json,
):
    """Answer a QUESTION about pictures or a spoken clip (or the question the clip asks).

    More image tokens see more detail and cost more time: the vision encoder and the prompt
    both grow with them (on a Pi 5, seconds at 70, minutes at 1120; docs/performance.md).

    \b
    Examples:
      edge-gemma ask --image photo.jpg "What is on the table?"
      edge-gemma ask -i before.png -i after.png "What changed?"
      edge-gemma ask --image receipt.jpg --image-tokens 560 "What is the total?"
      edge-gemma ask --camera 0 "What am I holding?"
      edge-gemma ask --audio question.wav
      edge-gemma ask --audio doorbell.flac "What sound is this?" --json
    """
    from edge.cli.output import format_stats
    from edge.launch import ProjectorUse, load_model
    from edge.media_question import answer, gather
    from edge.model.engine import GEMMA_SAMPLING

    inputs = gather(question, audio=audio_file, images=image_files, camera=camera)  # before any load
    plan = options.prepared(load.with_overrides(image_tokens=image_tokens))
    with load_model(plan, ProjectorUse.MEDIA) as loaded:
        reply = answer(loaded, inputs, sampling=GEMMA_SAMPLING.with_(max_tokens=max_tokens))
        for piece in reply.generation:
            if not as_json:
                click.echo(piece, nl=False)
        if as_json:
            click.echo(json.dumps(reply.summary(), indent=2))
            return
        click.echo()
        seen = ", ".join(
            f"{p.width}x{p.height} -> {n} image tokens" for p, n in zip(reply.pictures, reply.image_tokens)
        )
        if seen:  # the encoders' share of the wait (pictures and a clip), apart from the prompt's
            seen = f" [{seen}; encoded in {reply.generation.stats.prefill.encode_ms / 1000:.2f} s]"
        click.echo(format_stats(reply.generation.stats, loaded) + seen, err=True)
