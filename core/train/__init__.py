"""The full trainer (library part; recipes and CLI live in ``training/``).

Modules: ``data`` (dataset readers -> ``Sample`` lists, ``BScanDataset``), ``transforms`` (torchvision v2
augmentations; the evaluation transform is ``core.preprocess.preprocess_bscans``), ``splits``
(patient-level stratified group k-fold with a hash), ``losses`` (focal, distillation), ``loop``
(``fit``: AMP, accumulation, freezing, warm-up + cosine, SWA, early stopping, resume, DDP; its
named pieces ``train_one_epoch`` and ``validate``), ``steps`` (supervised and distillation step
objects, each owning its loss), ``checkpoint`` (``TrainState`` and the resume files),
``metrics`` (per fold, mean +- std, per eye through ``core.aggregate.decide``), ``ddp`` (torchrun
glue). The tiny fast dataset of the unit tests lives in ``tests/fixtures/toy.py``.
"""
