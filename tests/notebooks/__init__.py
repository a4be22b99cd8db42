"""Tests of the walkthrough notebooks (``notebooks/``) and of the Binder setup (``binder/``)."""
