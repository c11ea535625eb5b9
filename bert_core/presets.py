"""Named model shapes: the BERT models Google released, so `--model=bert-mini` works like a config file.

  bert-tiny   = bert-L2-H128      bert-mini   = bert-L4-H256
  bert-small  = bert-L4-H512      bert-medium = bert-L8-H512
  bert-L{2,4,6,8,10,12}-H{128,256,512,768}   the 24 small models (heads = H/64, feed-forward 4H)
  bert-base   = bert-L12-H768 (A12)          bert-large  = L24, H1024, A16, feed-forward 4096

All use Google's defaults: GELU, dropout 0.1, 512 positions, 2 token types, initializer range 0.02 and
the 30522-token uncased vocabulary unless `vocab_size` says otherwise.
"""

from __future__ import annotations

from bert_core.config import BertConfig
from bert_core.errors import UserError

DEFAULT_VOCAB_SIZE = 30522
SMALL_LAYERS = (2, 4, 6, 8, 10, 12)
SMALL_HIDDEN = (128, 256, 512, 768)


def _shape(layers: int, hidden: int, heads: int | None = None, intermediate: int | None = None) -> dict:
    return dict(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads or hidden // 64,
        intermediate_size=intermediate or 4 * hidden,
    )


def _presets() -> dict[str, dict]:
    shapes = {f"bert-L{l}-H{h}": _shape(l, h) for l in SMALL_LAYERS for h in SMALL_HIDDEN}
    shapes.update({
        "bert-tiny": shapes["bert-L2-H128"],
        "bert-mini": shapes["bert-L4-H256"],
        "bert-small": shapes["bert-L4-H512"],
        "bert-medium": shapes["bert-L8-H512"],
        "bert-base": shapes["bert-L12-H768"],
        "bert-large": _shape(24, 1024, heads=16, intermediate=4096),
    })
    return shapes


PRESETS: dict[str, dict] = _presets()


def preset_names() -> list[str]:
    """The named models first, then the 24-model grid in (L, H) order."""
    named = ["bert-tiny", "bert-mini", "bert-small", "bert-medium", "bert-base", "bert-large"]
    return named + [n for n in PRESETS if n not in named]


def preset_config(name: str, vocab_size: int | None = None) -> BertConfig:
    """The BertConfig of a named preset (case-insensitive, `_` accepted for `-`)."""
    key = {n.lower(): n for n in PRESETS}.get(name.strip().lower().replace("_", "-"))
    if key is None:
        raise UserError(f"--model={name}: unknown model, expected one of {', '.join(preset_names())}")
    return BertConfig(
        vocab_size=vocab_size or DEFAULT_VOCAB_SIZE,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=512,
        type_vocab_size=2,
        initializer_range=0.02,
        **PRESETS[key],
    )


def resolve_bert_config(model: str | None = None, bert_config_file: str | None = None,
                        vocab_size: int | None = None) -> BertConfig:
    """`--bert_config_file` or `--model`: exactly one. `vocab_size` (the vocab file's length) sets a
    preset's vocabulary; with a config file it may not exceed the file's vocab_size (a larger table,
    e.g. padded to a multiple of 8, is fine; a vocab with more tokens than rows would index past it)."""
    if (model is None) == (bert_config_file is None):
        raise UserError("give exactly one of --bert_config_file or --model "
                        f"(models: {', '.join(preset_names()[:6])}, bert-L<2..12>-H<128..768>)")
    if model is not None:
        return preset_config(model, vocab_size)
    config = BertConfig.from_json_file(bert_config_file)
    if vocab_size is not None and vocab_size > config.vocab_size:
        raise UserError(f"{bert_config_file}: vocab_size={config.vocab_size} but the vocab file has "
                        f"{vocab_size} tokens; token ids would run past the embedding table")
    return config
