"""The walk: what a user can deploy, getting a choice to converted once, and the notebooks."""
