"""Power and one-time boot device over the nodes' BMCs: Redfish (HTTP) and IPMI (pyghmi).

``run_power(inventory, action, nodes)`` acts on every selected node concurrently and raises one
error naming each node and BMC that failed."""

from .ops import ACTIONS, PowerResult, run_power

__all__ = ["ACTIONS", "PowerResult", "run_power"]
