"""``python -m captioner …``: see ``cli.py``."""
from .cli import main

raise SystemExit(main())
