"""A byte-level BPE tokenizer trained on the pretraining split (Hugging Face ``tokenizers``),
saved so that ``AutoTokenizer.from_pretrained(dir)`` loads it, with offsets for alignment; or,
when the profile names one (``authors_tokenizer``: the authors' CodeT5+ tokenizer), that
directory's tokenizer, keyed by the hash of its files, so that everything the book counts in
subwords (the probe functions that fit the context, the held-out MLM loss) counts the
external models' subwords."""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from ..cache import artifact_dir, cached
from .corpus import corpus_key
from .sources import files_hash
from .splits import pretraining_texts

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]
TOKENIZER_VERSION = "1"


def tokenizer_key(cfg) -> dict:
    if cfg.authors_tokenizer:
        return {"tokenizer": "external:" + files_hash(_external_dir(cfg))}
    return {**corpus_key(cfg), **cfg.subset("vocab_size")}


def _external_dir(cfg) -> Path:
    path = Path(cfg.authors_tokenizer).expanduser()
    if not path.is_dir():
        raise ValueError(f"authors_tokenizer {cfg.authors_tokenizer!r} is not a directory: give a Hugging Face "
                         f"tokenizer directory (save_pretrained's; the authors': CodeT5+ 220m's)")
    return path


def _build(cfg, out: Path) -> None:
    texts = pretraining_texts(cfg)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>", mask_token="<mask>",
                                   cls_token="<s>", sep_token="</s>", model_max_length=10**9)
    fast.save_pretrained(out)


def load_tokenizer(cfg):
    """The project's tokenizer for ``cfg`` (trained once, then cached), or the external one it names."""
    if cfg.authors_tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(str(_external_dir(cfg)))
        if not tokenizer.is_fast:
            raise ValueError(f"authors_tokenizer {cfg.authors_tokenizer}: a fast tokenizer (tokenizer.json) is "
                             f"needed, for the offsets that align subwords to code tokens")
        return tokenizer
    return cached("tokenizer", tokenizer_key(cfg), lambda out: _build(cfg, out),
                  lambda path: AutoTokenizer.from_pretrained(str(path)), TOKENIZER_VERSION)


def tokenizer_dir(cfg) -> Path:
    if cfg.authors_tokenizer:
        return _external_dir(cfg)
    load_tokenizer(cfg)
    return artifact_dir("tokenizer", tokenizer_key(cfg), TOKENIZER_VERSION)
