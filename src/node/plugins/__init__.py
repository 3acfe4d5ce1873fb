"""Plugins: gateway launchers and notifiers, built in or found through entry points."""
