"""The trial config's leaves (``trainer.config.TrialConfig``), as the spec names them by dotted
path (``hparams.learning_rate``): find one, validate a value against its type, read its default."""

from __future__ import annotations

import difflib
import typing
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from sweepd.spec.errors import Problem, fmt_value, model_in
from trainer.config import TrialConfig


def leaf(path: str) -> tuple[Any, str | None]:
    """(pydantic FieldInfo, None) for a trial-config leaf path, or (None, why not)."""
    model: type[BaseModel] = TrialConfig
    parts = path.split(".")
    walked: list[str] = []
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            where = ".".join(walked) or "the trial config"
            known = list(fields)
            close = difflib.get_close_matches(part, known, n=1)
            hint = f"did you mean {'.'.join([*walked, close[0]])!r}?" if close else f"{where} has: {', '.join(known)}"
            return None, f"not a trial-config field: {part!r} is not in {where} ({hint})"
        walked.append(part)
        sub = model_in(fields[part].annotation)
        if i == len(parts) - 1:
            if sub is not None and not typing.get_args(fields[part].annotation):
                return None, f"{path!r} is a section, not a field; name one of {', '.join(f'{path}.{k}' for k in sub.model_fields)}"
            return fields[part], None
        if sub is None:
            return None, f"not a trial-config field: {'.'.join(walked)!r} has no sub-fields"
        model = sub
    return None, "empty key"


_ADAPTERS: dict[str, TypeAdapter] = {}


def adapter(path: str) -> TypeAdapter:
    """A validator for one leaf's values, its constraints (ge, le...) included."""
    if path not in _ADAPTERS:
        field, _ = leaf(path)
        ann = field.annotation
        if field.metadata:
            ann = Annotated[tuple([ann, *field.metadata])]
        _ADAPTERS[path] = TypeAdapter(ann)
    return _ADAPTERS[path]


def leaf_default(path: str) -> Any:
    """The trial config's own default for a leaf."""
    return adapter(path).validate_python(leaf(path)[0].get_default(call_default_factory=True))


def numeric_kind(path: str) -> str:
    """'float', 'int' or 'other': which range domains a leaf accepts."""
    kinds = set()

    def walk(a: Any) -> None:
        if a is float:
            kinds.add("float")
        elif a is int:
            kinds.add("int")
        elif a is bool or a is type(None):
            pass
        elif typing.get_origin(a) is Annotated:
            walk(typing.get_args(a)[0])
        elif typing.get_origin(a) is typing.Union or type(a).__name__ == "UnionType":
            for arg in typing.get_args(a):
                walk(arg)
        else:
            kinds.add("other")

    walk(leaf(path)[0].annotation)
    if "float" in kinds:
        return "float"
    if kinds == {"int"}:
        return "int"
    return "other"


def check_value(path: str, value: Any, where: str, errors: list[Problem]) -> tuple[bool, Any]:
    """Validate one value against the leaf's type; on failure record why at ``where``."""
    try:
        return True, adapter(path).validate_python(value)
    except ValidationError as err:
        msg = err.errors()[0]["msg"].removeprefix("Value error, ")
        errors.append((where, f"{msg} (got {fmt_value(value)})"))
        return False, None
