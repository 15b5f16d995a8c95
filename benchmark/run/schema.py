"""The result record as a typed model: schema ``nlbench.record/1`` (docs/ARCHITECTURE.md).

Validation is the model's: ``Record.parse`` gives the record, or the problems with it, each naming
the key and what was expected. Fields the schema does not name are kept (``extra``), so what was
read is what was written; the writer (run/records.py) writes the dict it was given, never a dump of
the model, so the files stay byte for byte what they were.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple

from pydantic import (
    BaseModel,
    ConfigDict,
    PlainValidator,
    PrivateAttr,
    StrictBool,
    ValidationError,
    field_validator,
)

SCHEMA = "nlbench.record/1"


class _Text(str, Enum):
    """An enum whose members are their strings: equal to, hashed and printed as the value (the JSON's)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Kind(_Text):
    """The stages of a job, in the order they run; a record's kind is the stage that wrote it."""

    TRAIN = "train"
    EVAL = "eval"
    EVAL_MS_FLIP = "eval_ms_flip"
    BENCH = "bench"


class CheckpointSource(_Text):
    """Where the evaluated weights came from: trained by nlbench (the job's own train stage) or MMSeg's
    released file. A record without the field (older ones, train records) is trained."""

    TRAINED = "trained"
    RELEASED = "released"


class TrainStatus(_Text):
    """A train record's ``status`` (absent in older records: completed)."""

    COMPLETED = "completed"
    DIVERGED = "diverged"


KINDS = tuple(k.value for k in Kind)
EVAL_KINDS = (Kind.EVAL.value, Kind.EVAL_MS_FLIP.value)
CHECKPOINT_SOURCES = tuple(s.value for s in CheckpointSource)


# ----------------------------------------------------------------------------- field types


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> Any:
    if not _is_number(value):
        raise ValueError("expected a number")
    return value


def _count(value: Any) -> int:
    if not _is_count(value):
        raise ValueError("expected an integer")
    return value


def _name(value: Any) -> str:
    """Usable as one folder name: recipe and profile names become path components."""
    if not (isinstance(value, str) and value and not value.startswith(".")
            and not any(c in value for c in "/\\\0")):
        raise ValueError("expected a non-empty name without '/'")
    return value


def _utc_time(value: Any) -> str:
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValueError("expected an ISO-8601 time with a UTC offset")
    return value


Number = Annotated[float, PlainValidator(_number)]  # an int or a float, never a bool or a string
Count = Annotated[int, PlainValidator(_count)]
Name = Annotated[str, PlainValidator(_name)]
UtcTime = Annotated[str, PlainValidator(_utc_time)]  # kept as written: the files stay what they were


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")


class Metrics(_Part):
    """Percentages; ``per_class``: class -> {IoU, Acc}. An eval record has all three (``rule_problems``);
    a train record's are its last evaluation's, null where it made none."""

    aAcc: Optional[Number] = None
    mIoU: Optional[Number] = None
    mAcc: Optional[Number] = None
    per_class: Optional[Dict[str, Any]] = None


class Fast(_Part):
    """A bench record's ``fast`` object: nlbench's fast-path figures and the setting that made them
    (benchmark/engine/settings.py); the record's top-level fps and mem_gb are the published setting's."""

    fps: Number
    mem_gb: Optional[Number] = None
    infer_mem_gb: Optional[Number] = None
    train_step_s: Optional[Number] = None
    train_step_mem_gb: Optional[Number] = None
    attention: Literal["explicit", "sdpa"]
    amp: Optional[Literal["bf16", "fp16"]] = None
    tf32: StrictBool
    cudnn_benchmark: StrictBool
    channels_last: StrictBool
    compile: StrictBool
    ddp: StrictBool
    grad_set_to_none: StrictBool
    softmax_in_timer: StrictBool


class Provenance(_Part):
    """Where, how and from what a result was made (run/records.provenance); every probe may be null."""

    # Kept as written (never coerced): the report shows them as they are.
    git_commit: Any = None
    git_dirty: Any = None
    device_name: Any = None
    device_count: Any = None
    cpu_model: Any = None  # the processor's model name (absent in older records)
    cpu_capability: Any = None  # ATen's CPU instruction set: AVX512, AVX2, DEFAULT (absent in older records)
    dtype: Any = None
    world_size: Any = None
    recipe_hash: Any = None
    config_hash: Any = None  # recipe_hash without the seed (absent in older records)
    checkpoint_sha256: Any = None
    measurement: Optional[Dict[str, Any]] = None  # a bench record's: setting name -> setting


# ----------------------------------------------------------------------------- the record


class Record(BaseModel):
    """One finished stage's result. Read with ``Record.parse``; ``path`` is the file it came from."""

    model_config = ConfigDict(extra="allow")

    kind: Kind
    recipe: Name
    profile: Name
    seed: Count
    created_at: UtcTime
    iterations: Optional[Count] = None
    wall_time_s: Optional[Number] = None
    gpu_hours: Optional[Number] = None
    metrics: Optional[Metrics] = None
    mem_gb: Optional[Number] = None
    mem_kind: Optional[Any] = None
    fps: Optional[Number] = None
    train_step_s: Optional[Number] = None
    train_step_mem_gb: Optional[Number] = None
    fast: Optional[Fast] = None
    attempts: Optional[Count] = None
    provenance: Provenance
    checkpoint_source: Optional[CheckpointSource] = None
    status: Optional[TrainStatus] = None
    guard: Optional[Dict[str, Any]] = None  # the training guard's evidence
    stopped_at_iteration: Optional[Count] = None
    # How the run differed from the published setting (run/deviations.py), one short phrase each;
    # absent in records written before it was recorded (not known, which is not "none").
    deviations: Optional[List[str]] = None
    _path: Optional[str] = PrivateAttr(default=None)

    @field_validator("seed", "attempts", mode="after")
    @classmethod
    def _bounds(cls, value: Optional[int], info) -> Optional[int]:
        least = 0 if info.field_name == "seed" else 1
        if value is not None and value < least:
            raise ValueError(f"expected an integer >= {least}")
        return value

    @property
    def source(self) -> CheckpointSource:
        """The checkpoint source; a record without the field is trained (the one place that says so)."""
        return self.checkpoint_source or CheckpointSource.TRAINED

    @property
    def diverged(self) -> bool:
        return self.status == TrainStatus.DIVERGED

    @property
    def created(self) -> datetime:
        return datetime.fromisoformat(self.created_at)

    @property
    def path(self) -> Optional[str]:
        return self._path

    def located(self, path: str) -> "Record":
        self._path = path
        return self

    @property
    def row(self) -> Tuple[str, str, CheckpointSource, int]:
        """(recipe, profile, checkpoint source, seed): one seed of one summary row."""
        return self.recipe, self.profile, self.source, self.seed

    def rule_problems(self) -> List[str]:
        """What the fields' types cannot say: which kinds need which fields."""
        problems = []
        if self.kind == Kind.BENCH and self.fps is None:
            problems.append("fps: required (a number) for a bench record")
        if self.kind.value in EVAL_KINDS and self.metrics is None:
            problems.append(f"metrics: required for a {self.kind.value} record")
        elif self.kind.value in EVAL_KINDS:
            problems += [f"metrics.{key}: expected a number (percent), got None" for key in ("aAcc", "mIoU", "mAcc")
                         if getattr(self.metrics, key) is None]
        if self.diverged and self.kind != Kind.TRAIN:
            problems.append(f"status: only a train record can be diverged, this is a {self.kind.value} record")
        if self.diverged and self.stopped_at_iteration is None:
            problems.append("stopped_at_iteration: required (an integer) for a diverged train record")
        if self.checkpoint_source == CheckpointSource.RELEASED and self.kind == Kind.TRAIN:
            problems.append("checkpoint_source: a train record makes its own checkpoint, it cannot be 'released'")
        return problems

    @classmethod
    def parse(cls, data: Any) -> Tuple[Optional["Record"], List[str]]:
        """(the record, []) or (None, problems): each problem names the key and what was expected."""
        if not isinstance(data, dict):
            return None, [f"expected a JSON object, got {type(data).__name__}"]
        if data.get("schema") != SCHEMA:  # a foreign file: the rest of the checks would only add noise
            return None, [f"schema: expected {SCHEMA!r}, got {data.get('schema')!r}"]
        try:
            record = cls.model_validate(data)
        except ValidationError as exc:
            return None, _problems(exc)
        problems = record.rule_problems()
        return (None, problems) if problems else (record, [])


_EXPECTED = {"int_type": "an integer", "float_type": "a number", "dict_type": "an object",
             "model_type": "an object", "model_attributes_type": "an object", "bool_type": "true or false",
             "string_type": "a string"}


def _problems(exc: ValidationError) -> List[str]:
    """One line per key, pydantic's findings in the words of the other nlbench errors."""
    lines: Dict[str, str] = {}
    for err in exc.errors(include_url=False):
        key = ".".join(str(part) for part in err["loc"])
        if err["type"] == "missing":
            text = "required"
        elif err["type"] == "value_error":
            text = f"{err['msg'].removeprefix('Value error, ')}, got {err['input']!r}"
        elif err["type"] in ("enum", "literal_error"):
            text = f"expected one of {err['ctx']['expected']}, got {err['input']!r}"
        else:
            text = f"expected {_EXPECTED.get(err['type'], err['msg'])}, got {_shown(err['input'])}"
        lines.setdefault(key, f"{key}: {text}")
    return list(lines.values())


def _shown(value: Any) -> str:
    return type(value).__name__ if isinstance(value, (dict, list)) and len(repr(value)) > 60 else repr(value)


def validate_record(record: Any) -> List[str]:
    """Problems with a record (empty list = valid). Each problem names the key and what was expected."""
    return Record.parse(record)[1]
