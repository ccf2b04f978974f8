"""``python -m mirnet`` (also what ``torchrun -m mirnet train ...`` runs)."""

from mirnet.cli import main

raise SystemExit(main())
