"""The web dashboard: `ratchet dashboard` serves `app.create_app` (read-only over the
journal, reviews through governance)."""
