"""Evaluation at scale: ``mnemobot eval`` runs a matrix of task families x seeds x conditions, each
episode in its own process (a local pool or Ray), into a resumable results table; ``mnemobot
report`` turns the table into Markdown and HTML with confidence intervals and significance tests.

Modules: :mod:`~mnemobot.evaluation.matrix` (the matrix), :mod:`~mnemobot.evaluation.executor`
(where episodes run), :mod:`~mnemobot.evaluation.worker` (one episode's process),
:mod:`~mnemobot.evaluation.results` (journal and tables), :mod:`~mnemobot.evaluation.run`
(``mnemobot eval``), :mod:`~mnemobot.evaluation.report`, :mod:`~mnemobot.evaluation.stats` and
:mod:`~mnemobot.evaluation.svg` (``mnemobot report``).
"""
