"""What a local sentence-transformers checkpoint says about itself, read without loading it.

A model entry that names only a ``path`` takes its pooling, its instructions (the checkpoint's
``prompts``) and its tokenizer's padding side from the checkpoint itself, so a user's bge-like or
Qwen-like checkpoint is not silently encoded as all-MiniLM-L6-v2 would be (opera.config.resolve_model).
"""

from __future__ import annotations

from pathlib import Path

from opera import io

# sentence-transformers Pooling modes -> the config's `pooling` values
_POOLING = {"mean": "mean", "cls": "cls", "lasttoken": "last"}
_POOLING_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_lasttoken": "last"}


def _json(path: Path) -> dict | None:
    """A checkpoint's JSON file, or None when it has none; a file that is there but not JSON raises
    naming it (a damaged checkpoint would otherwise be encoded with the wrong settings)."""
    return io.read_json_if_exists(path)


def settings_of(path: str) -> dict:
    """The model settings a local checkpoint fixes itself: ``pooling`` (its Pooling module),
    ``query_instruction`` / ``passage_instruction`` (its saved prompts ``query`` and ``document`` or
    ``passage``) and ``padding_side`` (its tokenizer config). Empty for a hub id or a folder that
    says nothing about them."""
    folder = Path(path).expanduser()
    found: dict = {}
    modules = _json(folder / "modules.json")
    if isinstance(modules, list):
        for module in modules:
            if str(module.get("type", "")).endswith("Pooling"):
                config = _json(folder / str(module.get("path", "")) / "config.json") or {}
                mode = _POOLING.get(config.get("pooling_mode"))
                flags = [name for key, name in _POOLING_FLAGS.items() if config.get(key)]
                if mode or len(flags) == 1:
                    found["pooling"] = mode or flags[0]
        prompts = (_json(folder / "config_sentence_transformers.json") or {}).get("prompts") or {}
        if "query" in prompts:
            found["query_instruction"] = prompts["query"]
        for name in ("document", "passage"):
            if name in prompts:
                found["passage_instruction"] = prompts[name]
                break
    side = (_json(folder / "tokenizer_config.json") or {}).get("padding_side")
    if side in ("left", "right"):
        found["padding_side"] = side
    return found
