"""What a model is, by content: a published checkpoint (a step folder of a finetune run, verified
against its checksums) or another model (a hub id, the shipped model, a local folder)."""

from __future__ import annotations

from pathlib import Path

from opera import io


def is_published_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a step folder of a published finetune run (its run.json beside it), to be
    verified against its checksums.json (a missing one is an error), rather than another model: a
    hub id, the shipped model's name, a plain local model folder."""
    return (Path(path).parent / "run.json").is_file()


def model_identity(path: str | Path) -> str:
    """What encoded a store or a set of query embeddings, by content: a published checkpoint's
    checksums.json digest (it binds every file of the checkpoint), else the model's files' digest
    (opera.preflight.model_digest: the shipped model, a local folder, a cached hub snapshot)."""
    from opera import preflight

    if is_published_checkpoint(path):
        return "checkpoint:" + io.sha256_of(Path(path) / io.DIR_CHECKSUMS)
    return "model:" + preflight.model_digest(str(path))


def verify_checkpoint(checkpoint: str | Path) -> None:
    """A published checkpoint matches its checksums.json, or CorruptArtifactError says how to get it back."""
    try:
        io.verify_dir(checkpoint)
    except io.CorruptArtifactError as exc:
        run = Path(checkpoint).parent
        raise io.CorruptArtifactError(
            f"{exc}. To get the checkpoint back, delete its run {run} and rerun the workflow: the finetune "
            "job publishes the finished run again from its work folder if that copy is intact, else trains it again"
        ) from None
