"""`python -m tools.dashboard_picture`."""

from .run import main

raise SystemExit(main())
