"""The web UI served by the API (`pages.install`): templates, one stylesheet, one script."""
