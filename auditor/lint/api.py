"""Everything a static rule may use of the engine, in one place.

Rules (``rules/static/``) import from here, from :mod:`torch_audit.findings` and
:mod:`torch_audit.rule`, and nothing else of torch_audit (``tests/test_import_graph.py``). The
engine's modules can then be reorganised without touching the catalogue, and this list says what
the facts offer. What a rule asks of the file it checks goes through ``self.ctx`` (a
:class:`~torch_audit.lint.context.FileContext`: ``dataflow``, ``modules``, ``training``,
``inference``, ``crossfile``); these are the helpers and vocabularies to ask with.
"""

from torch_audit.lint import edits as fixes  # the rules call it `fixes`
from torch_audit.lint.facts.deprecations import (
    ARGUMENT,
    DEPRECATED,
    NON_PUBLIC,
    REMOVED,
    TRANSFORM,
    TableRule,
    api_uses,
    argument_entries,
    compat_guarded,
    ctx_target,
    describe,
    load_table,
    with_migration_notes,
)
from torch_audit.lint.facts.index import Call, Loop, Scope, Statement, argument
from torch_audit.lint.facts.inference import INFERENCE_NAME
from torch_audit.lint.facts.layers import (
    LOGIT_LAYERS,
    describe_source,
    is_layer_name,
    is_real_module,
    is_stateless_layer,
    output_width,
    related_locations,
    self_attribute,
    shape_preserving_dataflow,
)
from torch_audit.lint.facts.modules import LIGHTNING_BASES
from torch_audit.lint.facts.names import canonical, dotted, module_name
from torch_audit.lint.facts.numerics import EXP, LOG, SUM, cannot_be_small, is_one, torch_call
from torch_audit.lint.facts.optim import ClassFreeze, construction_freezes, covers, freezes, optimizer_constructions
from torch_audit.lint.facts.tensors import MODULE, PARAMETER, tensors
from torch_audit.lint.facts.torch_groups import (
    BATCH_NORMS,
    INSTANCE_NORMS,
    SIGMOID_FUNCTIONS,
    SOFTMAX_FUNCTIONS,
    bool_argument,
    exp_of_log_softmax,
    is_log_softmax,
    is_probabilities,
    is_sigmoid,
    is_softmax,
    loss_calls,
)
from torch_audit.lint.facts.training import CLIP_FUNCTIONS, Event
from torch_audit.lint.facts.untrusted import untrusted_source
from torch_audit.lint.project.model import describe_site
from torch_audit.lint.traverse import children

__all__ = [
    # fixes: edits and spans (torch_audit.lint.edits)
    "fixes",
    # the index: scopes, statements, loops, calls and their arguments
    "Call", "Loop", "Scope", "Statement", "argument", "children",
    # names
    "canonical", "dotted", "module_name",
    # torch API groups and the questions asked of them
    "BATCH_NORMS", "INSTANCE_NORMS", "SIGMOID_FUNCTIONS", "SOFTMAX_FUNCTIONS", "LOGIT_LAYERS",
    "LIGHTNING_BASES", "CLIP_FUNCTIONS", "INFERENCE_NAME", "bool_argument", "exp_of_log_softmax",
    "is_log_softmax", "is_probabilities", "is_sigmoid", "is_softmax", "loss_calls",
    # layers, modules and what kind of object a value is
    "is_layer_name", "is_real_module", "is_stateless_layer", "output_width", "self_attribute",
    "shape_preserving_dataflow", "MODULE", "PARAMETER", "tensors",
    # training events, optimizers and freezing
    "Event", "ClassFreeze", "construction_freezes", "covers", "freezes", "optimizer_constructions",
    # numerics
    "EXP", "LOG", "SUM", "cannot_be_small", "is_one", "torch_call",
    # messages about evidence (in this file or beyond it)
    "describe_source", "describe_site", "related_locations",
    # deprecation and migration tables
    "ARGUMENT", "DEPRECATED", "NON_PUBLIC", "REMOVED", "TRANSFORM", "TableRule", "api_uses",
    "argument_entries", "compat_guarded", "ctx_target", "describe", "load_table",
    "with_migration_notes",
    # untrusted inputs
    "untrusted_source",
]
