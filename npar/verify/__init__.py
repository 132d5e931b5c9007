"""Verification: gradient checks, causality checks and twins of the models in
other frameworks (imported lazily: torch is an optional extra)."""
