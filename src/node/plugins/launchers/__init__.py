"""Gateway launchers: ``sim``, ``ibc``, ``exe``, ``external`` (the contract is in ``base``)."""

from node.plugins.launchers.base import GatewayEndpoint, Launcher, LaunchError, LoginFailure

__all__ = ["GatewayEndpoint", "LaunchError", "Launcher", "LoginFailure"]
