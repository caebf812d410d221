"""How the simulated server answers: the schema of a workflow file's ``simulate:``
section, served by ``concilium.serving.SimServer`` (a test double, not a model).
Scripted replies (``Rule``), a statistical model of right and wrong answers
(``Statistical``, with a per-token confidence model, ``TokenConfidence``), latency
and faults.

Example:
    >>> from concilium.agents.sim import Latency, Rule, SimConfig
    >>> config = SimConfig(rules=[Rule(agent="ann", replies=["84"])], latency=Latency(fixed=0.01))
    >>> config.rules[0].replies, config.latency.fixed
    (['84'], 0.01)
"""

from ._sim_config import Faults, Latency, Rule, SimConfig, Statistical, TokenConfidence

__all__ = ["SimConfig", "Rule", "Statistical", "TokenConfidence", "Latency", "Faults"]
