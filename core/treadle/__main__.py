"""``python -m treadle`` runs the command line (``torchrun -m treadle train`` too)."""

from treadle.cli import main

raise SystemExit(main())
