"""Configuration of the simulated server: the models live in ``concilium.agents``
(beside the other test doubles) so a workflow file's ``simulate:`` is part of its
schema; re-exported here where the server reads them."""

from concilium.agents import Faults, Latency, Rule, SimConfig, Statistical

__all__ = ["Faults", "Latency", "Rule", "SimConfig", "Statistical"]
