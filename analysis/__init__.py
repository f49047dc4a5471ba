"""Companion analyses for "Towards Understanding What State Space Models Learn About Code"
(Wu, Anand, Verma, Mezini; arXiv 2602.06774).

Rooms: ``config`` (profiles), ``cache`` (artifacts), ``data`` (corpus, parsing, probe and
fine-tuning sets, tokenizer), ``models`` (CodeSSM, RoCoder, BiMamba, the selective scan),
``train`` (pretraining), ``finetune``, ``probing`` (DirectProbe, linear probe),
``interpret`` (SSM-Interpret spectra), ``plots`` (figure style), ``book`` (papermill runner),
``ledger`` (claim verdicts). Submodules are imported on use; importing ``analysis`` is cheap.
"""
__version__ = "0.1.0"
