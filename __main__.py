"""``python -m mnemobot`` is the ``mnemobot`` command."""

from mnemobot.agent.cli import main

raise SystemExit(main())
