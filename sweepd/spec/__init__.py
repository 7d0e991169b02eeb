"""The sweep spec: one YAML (or JSON) document describes a whole hyperparameter sweep.

    name: demo
    model: {path: builtin:tiny}
    data: {train: [{path: data/builtin/train.jsonl}], eval: [{path: data/builtin/eval.jsonl}]}
    search:
      algorithm: tpe              # tpe | random | grid
      num_trials: 12
      max_concurrent: 2
      seed: 0
      space:
        effective_batch_size: {choice: [8, 32, 128]}
        learning_rate: {loguniform: [1.0e-5, 3.0e-3]}
        warmup_steps: {choice: [0, 10]}
        lr_scheduler: {choice: [constant, cosine]}
    fixed: {optimizer: {weight_decay: 0.1}, eval: {max_items: 100}}
    budget: {max_samples: 8192}
    pruner: {type: asha, signal: loss, grace: 1024}   # options left out: the pruner class's defaults
    objective: {metric: eval_loss, mode: min}
    resources: {workers_per_trial: 1, cpus_per_worker: 1, gpus_per_worker: 0, zero_stage: 2}
    save_best_model: false

Entry points: ``load_spec(path_or_text)`` and ``parse_spec(mapping_or_text)`` return a validated,
frozen ``SweepSpec`` or raise ``SpecError``, whose ``.errors`` lists EVERY problem found as
``(field_path, message)`` pairs (``data.train[0].path``, ``search.space.learning_rate.loguniform``).
``parse_spec_text`` only reads YAML/JSON text. A validated spec travels as data:
``spec.to_stored()`` (with its ``schema_version``) and ``SweepSpec.from_stored(doc)``, which
rebuilds it without judging it again.

Search space keys
-----------------
A key is a short name or any dotted trial-config path (``trainer.config.TrialConfig``):

    effective_batch_size -> hparams.effective_batch_size    weight_decay -> optimizer.weight_decay
    learning_rate        -> hparams.learning_rate           strategy     -> data.strategy
    warmup_steps         -> hparams.warmup_steps            epochs       -> budget.epochs
    lr_scheduler         -> hparams.lr_scheduler

A value is a domain, ``{choice: [...]}``, ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``,
``{int: [lo, hi]}`` (both ends included), or a plain value (fixed for every trial). A searched
``budget.*`` key (e.g. ``epochs``) replaces the ``budget:`` section for that trial. Keys that
have their own section cannot be searched: ``model``, ``data.train``, ``data.eval``,
``output_dir``, ``resources.num_workers``, ``resources.zero_stage``, ``resources.device``.

``fixed`` holds trial-config fields fixed for every trial, nested as in the trial YAML; it is
for ``hparams``, ``optimizer``, ``eval`` and ``seed`` (the other sections have their own place
in the spec).

Paths
-----
Relative data and model paths resolve against the current directory (``base_dir``), the way the
trainer CLI resolves a trial YAML. With ``check_paths=True`` (the default) each must exist and
its resolved path, symlinks followed, must lie inside one of ``SWEEPD_DATA_ROOTS``; the validated
spec then carries the resolved absolute paths. ``check_paths=False`` checks the structure only
(no filesystem access) and makes relative paths absolute; use it for specs meant for another
machine (e.g. ``examples/recipe_7b.yaml``).

Resources
---------
``workers_per_trial * cpus_per_worker`` and ``workers_per_trial * gpus_per_worker`` must fit the
cluster's ``Capacity`` (default: this machine, ``os.cpu_count()`` and
``torch.cuda.device_count()``). A trial with ``gpus_per_worker: 0`` runs on the CPU; with GPUs
reserved it runs on CUDA, and its estimated peak memory per GPU (``fit.py``, trainer/fit.py) for the
space's largest micro-batch must fit ``resources.gpu_memory_gb`` (default: the first GPU's memory
in ``Capacity``; unknown: not judged).

Where things are
----------------
``sections.py`` search / pruner / objective / resources; ``space.py`` keys and domains;
``fixed.py`` the ``fixed:`` section; ``fields.py`` trial-config leaves; ``budget.py`` full
budgets; ``paths.py`` data and model paths; ``capacity.py`` Capacity and the validation context;
``checks.py`` the checks across sections, one named function each; ``fit.py`` the memory fit
check's estimate and report; ``trials.py`` spec -> trial
config; ``model.py`` SweepSpec; ``loading.py`` YAML/JSON and the entry points; ``errors.py``
SpecError; ``plan.py`` what ``sweepd validate`` prints.
"""

from sweepd.spec.capacity import Capacity
from sweepd.spec.errors import SpecError
from sweepd.spec.loading import load_spec, parse_spec, parse_spec_text
from sweepd.spec.model import SCHEMA_VERSION, SweepSpec
from sweepd.spec.sections import EVAL_METRICS, METRICS, ObjectiveSpec, PrunerSpec, ResourcesSpec, SearchSpec
from sweepd.spec.space import DOMAIN_KINDS, SPACE_ALIASES, Domain, canonical_key, parse_space

__all__ = [
    "Capacity",
    "DOMAIN_KINDS",
    "Domain",
    "EVAL_METRICS",
    "METRICS",
    "ObjectiveSpec",
    "PrunerSpec",
    "ResourcesSpec",
    "SCHEMA_VERSION",
    "SPACE_ALIASES",
    "SearchSpec",
    "SpecError",
    "SweepSpec",
    "canonical_key",
    "load_spec",
    "parse_spec",
    "parse_spec_text",
    "parse_space",
]
