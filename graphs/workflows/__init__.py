"""Workflow files: the YAML format, its JSON Schema, and the loader that builds a
file into a ``Graph``. It sits above the patterns: importing it registers every
built-in pattern, and ``workflow:`` dispatches to whichever pattern registered the
``kind`` (see ``concilium.graphs.register_pattern``).

Example:
    >>> from concilium.graphs.workflows import parse_workflow
    >>> spec, _, _ = parse_workflow('''
    ... name: vote
    ... models: {m: {model: hosted_vllm/x, api_base: "http://127.0.0.1:1/v1"}}
    ... agents: {a: {model: m}}
    ... workflow: {kind: self_consistency, agent: a, samples: 3}
    ... ''')
    >>> spec.workflow.kind, spec.workflow.samples
    ('self_consistency', 3)
"""

from concilium.graphs import patterns as _builtin_patterns  # noqa: F401  (registers the built-ins)

from ._loader import Workflow, build_workflow, load_workflow, parse_workflow, validate_workflow
from ._spec import WorkflowSpec
from ._yaml import load_yaml, read_workflow_text

__all__ = [
    # loading
    "Workflow",
    "load_workflow",
    "parse_workflow",
    "validate_workflow",
    "build_workflow",
    # the file format (its JSON Schema: WorkflowSpec.model_json_schema())
    "WorkflowSpec",
    # YAML with line numbers, bounded reads (cluster and simulated-server files too)
    "load_yaml",
    "read_workflow_text",
]
