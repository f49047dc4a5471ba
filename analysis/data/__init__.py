"""Corpus, parsing, probe and fine-tuning datasets, tokenizer (see the data card, data/README.md).

The one entry point for code structure is ``parse_function``; everything else reads the
corpus through ``load_corpus(cfg)`` and is cached by the fields of ``cfg`` it depends on.
"""
from .align import align_subwords
from .corpus import Corpus, load_corpus, read_codesearchnet
from .deviations import deviation_table
from .extract import Function
from .finetune_sets import finetune_dataset, long_context_threshold, strip_annotations, type_label_names
from .parse import CodeParseError, CodeToken, ParsedCode, parse_function
from .probes import ProbeData, probe_dataset
from .sources import SourceError
from .splits import assign_splits, pretraining_texts, split_texts
from .tokenizer import load_tokenizer, tokenizer_dir

__all__ = ["align_subwords", "Corpus", "load_corpus", "read_codesearchnet", "deviation_table", "Function",
           "finetune_dataset", "long_context_threshold", "pretraining_texts", "strip_annotations",
           "type_label_names", "CodeParseError", "CodeToken", "ParsedCode", "parse_function",
           "ProbeData", "probe_dataset", "SourceError", "assign_splits", "split_texts", "load_tokenizer",
           "tokenizer_dir"]
