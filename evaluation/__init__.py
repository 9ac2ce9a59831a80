"""Evaluation: everything that measures the agent and its memory, apart from the agent itself.

* Memory on its own: :mod:`~mnemobot.evaluation.questions` (the question format, gold answers,
  scoring), :mod:`~mnemobot.evaluation.suite` (``mnemobot suite``: recorded episodes with questions
  whose answers memory must keep), :mod:`~mnemobot.evaluation.replay` (``mnemobot replay``: a bag
  through perception and memory, no simulator, scored).
* Episodes at scale: :mod:`~mnemobot.evaluation.matrix` (task families x seeds x conditions),
  :mod:`~mnemobot.evaluation.executor` (a local process pool or Ray),
  :mod:`~mnemobot.evaluation.worker` (one episode's process), :mod:`~mnemobot.evaluation.results`
  (journal and tables), :mod:`~mnemobot.evaluation.run` (``mnemobot eval``).
* Reading the results: :mod:`~mnemobot.evaluation.report`, :mod:`~mnemobot.evaluation.stats` and
  :mod:`~mnemobot.evaluation.svg` (``mnemobot report``), :mod:`~mnemobot.evaluation.viz`
  (rerun recordings: ``mnemobot viz``, ``mnemobot run --viz``).
"""
