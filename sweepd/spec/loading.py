"""Reading a spec: ``load_spec`` (a file or YAML/JSON text), ``parse_spec`` (a mapping, or text)
and ``parse_spec_text`` (YAML/JSON text to plain data, no validation). Each raises ``SpecError``
listing every problem: the structural ones and those across sections, all in one go."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from sweepd.spec.capacity import Capacity, Context
from sweepd.spec.checks import Sections, run_checks
from sweepd.spec.errors import SpecError, validation_errors
from sweepd.spec.finite import non_finite_problems
from sweepd.spec.model import SweepSpec
from sweepd.spec.sections import ResourcesSpec, SearchSpec


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser: ~5x faster on a big spec
    """SafeLoader that refuses duplicate keys and reads 1e-5 as a float (YAML 1.2 style)."""


def _no_duplicates(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def parse_spec_text(text: str, source: str = "spec") -> Any:
    """YAML (or JSON, which is YAML) text as plain data, not yet validated. Duplicate keys are
    errors and 1e-5 is a float. A syntax error is a ``SpecError`` at ``yaml`` with its line."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise SpecError([("yaml", f"{where}{problem}")], source=source) from None


def _looks_like_path(value: str) -> bool:
    if "\n" in value or value.lstrip().startswith("{"):
        return False
    return value.endswith((".yaml", ".yml", ".json")) or os.path.isfile(value)


def load_spec(
    path_or_text: str | os.PathLike,
    *,
    check_paths: bool = True,
    capacity: Capacity | None = None,
    base_dir: str | os.PathLike | None = None,
    data_roots: list[str | os.PathLike] | None = None,
) -> SweepSpec:
    """A spec from a file (a ``Path``, or a one-line string ending in .yaml/.yml/.json or naming
    a file) or from YAML/JSON text. Raises ``SpecError`` listing every problem, YAML syntax
    errors with their line number included."""
    if isinstance(path_or_text, os.PathLike) or (isinstance(path_or_text, str) and _looks_like_path(path_or_text)):
        path = Path(path_or_text)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise SpecError([("file", f"cannot read {str(path)!r} ({err.strerror})")], source=str(path)) from None
        source = str(path)
    else:
        text, source = str(path_or_text), "spec"
    raw = parse_spec_text(text, source)
    if isinstance(raw, str) and source == "spec" and "\n" not in text.strip():
        raise SpecError([("file", f"{text.strip()!r} is not a file here, nor a YAML/JSON mapping")], source=source)
    return parse_spec(raw, check_paths=check_paths, capacity=capacity, base_dir=base_dir,
                      data_roots=data_roots, source=source)


def parse_spec(
    raw: Any,
    *,
    check_paths: bool = True,
    capacity: Capacity | None = None,
    base_dir: str | os.PathLike | None = None,
    data_roots: list[str | os.PathLike] | None = None,
    source: str = "spec",
) -> SweepSpec:
    """A validated ``SweepSpec`` from a mapping (a parsed YAML/JSON body) or from YAML/JSON
    text, or ``SpecError`` with every problem."""
    if isinstance(raw, (str, bytes)):
        raw = parse_spec_text(raw.decode() if isinstance(raw, bytes) else raw, source)
    if not isinstance(raw, dict):
        raise SpecError([("(top level)", f"expected a mapping, got {type(raw).__name__}")], source=source)
    ctx = Context(
        check_paths=check_paths,
        capacity=capacity,
        base_dir=Path(base_dir) if base_dir is not None else Path.cwd(),
        data_roots=[Path(r) for r in data_roots] if data_roots is not None else None,
    )
    not_finite = non_finite_problems(raw)
    try:
        spec = SweepSpec.model_validate(raw, context={"sweepd": ctx})
        if not not_finite:
            return spec
        raise SpecError(not_finite, source=source)
    except ValidationError as err:
        named = {path for path, _ in not_finite}  # one message for an inf, not also its range's
        errors = not_finite + [e for e in validation_errors(err, SweepSpec) if e[0] not in named]
        checks_ran = any(isinstance((e.get("ctx") or {}).get("error"), SpecError) for e in err.errors())
    if not checks_ran:
        # Some section failed, so the checks across sections did not run: run them on the
        # sections that are fine on their own, so the user sees everything at once.
        errors += run_checks(Sections.of(valid_sections(raw)), ctx)
    raise SpecError(errors, source=source)


def valid_sections(raw: dict[str, Any]) -> dict[str, Any]:
    """The sections of ``raw`` that validate on their own (missing optional ones: their
    default), each as its model; a salvageable section with bad fields keeps its good ones."""
    sections: dict[str, Any] = {}
    for name, field in SweepSpec.model_fields.items():
        if name not in raw:
            if not field.is_required():
                sections[name] = field.get_default(call_default_factory=True)
            continue
        try:
            sections[name] = TypeAdapter(field.annotation).validate_python(raw[name])
        except ValidationError:
            salvaged = _salvage(name, raw[name])
            if salvaged is not None:
                sections[name] = salvaged
    return sections


# Sections whose good fields are still worth checking when one of their fields is bad: a bad
# field takes its default, which for these never causes a false error elsewhere (an unknown
# algorithm skips the grid check; a default worker count of 1 fits any cluster).
_SALVAGEABLE: dict[str, type[BaseModel]] = {"search": SearchSpec, "resources": ResourcesSpec}


def _salvage(name: str, raw: Any) -> BaseModel | None:
    model = _SALVAGEABLE.get(name)
    if model is None or not isinstance(raw, dict):
        return None
    values: dict[str, Any] = {}
    for fname, field in model.model_fields.items():
        if fname not in raw:
            if field.is_required():
                return None
            continue
        ann = Annotated[tuple([field.annotation, *field.metadata])] if field.metadata else field.annotation
        try:
            values[fname] = TypeAdapter(ann).validate_python(raw[fname])
        except ValidationError:
            if field.is_required():
                return None
    return model.model_construct(**values)
