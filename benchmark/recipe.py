"""Recipes: YAML files with ``_base_`` inheritance, profiles and ``--set`` overrides, validated once
into typed, frozen objects.

Resolution order: bases (depth-first, in list order) -> the file itself -> the chosen profile's
overlay (``profiles.<name>``, merged from every base like any other key) -> ``--set`` overrides.
Only then is the whole tree validated, so an error always names the file, the dotted key and what
was expected.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from benchmark.errors import NLBenchError
from benchmark.io.files import atomic_write_text
from benchmark.stats import SEED_STD_MIOU

REPO_ROOT = Path(__file__).resolve().parent.parent
RECIPES_DIR = Path(os.environ.get("NLBENCH_RECIPES", REPO_ROOT / "recipes"))

# A relative data root (the recipe's data.data_root or a --data-root) is resolved against this folder
# when the variable is set, else against the current directory, as MMSeg's data_root is (README, "Data").
DATA_BASE_ENV = "NLBENCH_DATA_BASE"

# The label value that the loss and the metrics ignore (MMSeg's ignore_index; the pad value of labels).
IGNORE_INDEX = 255

# Keys that steer loading and are not part of the validated recipe.
_BASE_KEY = "_base_"
_PROFILES_KEY = "profiles"


class _Strict(BaseModel):
    """Unknown keys are errors; values are not coerced across types (no "3" -> 3)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# Sizes, scales, strides: (a, b) of positive integers (0 would divide by zero far from here).
PairInt = Tuple[PositiveInt, PositiveInt]


class NonLocalConfig(_Strict):
    reduction: int = Field(2, ge=1)
    use_scale: bool = True
    mode: Literal["embedded_gaussian", "dot_product"] = "embedded_gaussian"
    # "explicit": mmcv's arithmetic (the attention matrix, in blocks of rows when inferring at large
    # sizes), the default; "sdpa": torch's scaled_dot_product_attention, part of the `fast` setting
    # (docs/FIDELITY.md, "Attention").
    impl: Literal["sdpa", "explicit"] = "explicit"


class HeadConfig(_Strict):
    channels: int = Field(gt=0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    loss_weight: float = Field(ge=0.0)


class ModelConfig(_Strict):
    depth: Literal[18, 34, 50, 101]  # 18 (and 34): small trunks, the smoke profile's is 18
    # MMSeg's backbone.stem_channels and backbone.base_channels (64 in every published row); the
    # smoke profile's trunks are narrower, which makes a smoke run several times cheaper.
    stem_channels: int = Field(64, gt=0)
    base_channels: int = Field(64, gt=0)
    num_classes: int = Field(gt=0)
    align_corners: bool = False
    decode_head: HeadConfig
    non_local: NonLocalConfig = NonLocalConfig()
    auxiliary_head: Optional[HeadConfig] = None
    # ImageNet weights for the backbone: "open-mmlab://resnet50_v1c", a URL or a file; null = random init.
    pretrained: Optional[str] = None


def data_base() -> Path:
    """The folder a relative data root is resolved against: $NLBENCH_DATA_BASE, else the current directory."""
    return Path(os.environ.get(DATA_BASE_ENV) or os.getcwd()).resolve()


def resolve_data_root(root: Union[str, os.PathLike]) -> Path:
    """``root`` as an absolute path: a relative one joined to ``data_base()``."""
    path = Path(root).expanduser()
    return path if path.is_absolute() else (data_base() / path).resolve()


def data_root_origin(root: Union[str, os.PathLike]) -> str:
    """Where an absolute data root came from, for messages: "" or " (relative 'x', against ...)"."""
    path = Path(root).expanduser()
    if path.is_absolute():
        return ""
    how = f"${DATA_BASE_ENV}" if os.environ.get(DATA_BASE_ENV) else "the current directory"
    return f" (the relative {str(root)!r} resolved against {how} {data_base()})"


class SyntheticConfig(_Strict):
    """Parameters for `nlbench synth`, used when the recipe's data root is written on first use."""

    train: int = Field(gt=0)
    val: int = Field(gt=0)
    size: PairInt  # (h, w) of every image
    seed: int = 0


class DataConfig(_Strict):
    dataset: Literal["cityscapes", "ade20k", "voc12aug"]
    # Means exactly what MMSeg's data_root means; a relative one resolves against $NLBENCH_DATA_BASE,
    # else the working directory (resolve_data_root).
    data_root: str
    img_scale: PairInt  # (w, h), MMSeg's convention: (long, short) bound of the keep-ratio resize
    crop_size: PairInt  # (h, w)
    ratio_range: Tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = Field(0.75, gt=0.0, le=1.0)
    flip_prob: float = Field(0.5, ge=0.0, le=1.0)
    imgs_per_gpu: int = Field(gt=0)
    workers_per_gpu: int = Field(2, ge=0)
    # When set, a missing data root is filled with a synthetic dataset in the real layout.
    synthetic: Optional[SyntheticConfig] = None

    @field_validator("ratio_range")
    @classmethod
    def _ordered(cls, v: Tuple[float, float]) -> Tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError("expected 0 < low <= high")
        return v


class TestConfig(_Strict):
    __test__ = False  # not a pytest class

    mode: Literal["whole", "slide"]
    crop_size: Optional[PairInt] = None  # (h, w) of a sliding window
    stride: Optional[PairInt] = None  # (h, w)
    ms_flip_ratios: Tuple[PositiveFloat, ...] = Field((0.5, 0.75, 1.0, 1.25, 1.5, 1.75), min_length=1)
    ms_flip_published: bool = False
    # Autocast for inference (periodic eval, the eval stage, predict); null: fp32, as MMSeg 1.x
    # evaluates (mmengine's ValLoop/TestLoop fp16 is off unless asked, whatever the training's amp).
    # runtime.amp is the training's only; `--fast` sets this one (engine/settings.py).
    amp: Optional[Literal["bf16", "fp16"]] = None

    @model_validator(mode="after")
    def _slide_needs_windows(self) -> "TestConfig":
        if self.mode == "slide" and (self.crop_size is None or self.stride is None):
            raise ValueError("slide mode needs test.crop_size and test.stride")
        return self


class ScheduleConfig(_Strict):
    max_iters: int = Field(gt=0)
    lr: float = Field(0.01, gt=0.0)
    momentum: float = Field(0.9, ge=0.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    power: float = Field(0.9, gt=0.0)
    min_lr: float = Field(1e-4, ge=0.0)
    checkpoint_interval: int = Field(gt=0)
    eval_interval: int = Field(gt=0)
    log_interval: int = Field(50, gt=0)

    def evaluates_at(self, iteration: int) -> bool:
        """Training evaluates after ``iteration`` (1-based): every ``eval_interval`` and at the end, as
        mmengine's IterBasedTrainLoop (engine/train.py; the MMSeg-form log places its val lines by it)."""
        return iteration % self.eval_interval == 0 or iteration == self.max_iters


class RuntimeConfig(_Strict):
    gpus: int = Field(gt=0)  # GPUs of the published run; effective batch = gpus * imgs_per_gpu
    seed: int = 0
    amp: Optional[Literal["bf16", "fp16"]] = None
    channels_last: bool = False
    # torch.compile of the training step's model (and of the `fast` bench setting's); off by default.
    compile: bool = False
    cudnn_benchmark: bool = True  # on in training, as published
    # TF32 for CUDA matmuls and cuDNN convolutions; off as on the published V100s (true fp32). Train,
    # eval, predict and bench set both flags from it; the bench's `fast` setting turns it on.
    tf32: bool = False
    sync_bn: bool = True  # used whenever the world size is > 1
    # Intra-op threads of a run on the CPU (train, eval, bench); null: torch's default (the cores).
    # CPU float sums depend on how the work is split over threads, so a fixed count removes one source of
    # run-to-run difference (the instruction set's kernels remain: docs/SMOKE.md); the smoke profile sets 1.
    cpu_threads: Optional[int] = Field(None, gt=0)


class BenchConfig(_Strict):
    warmup_images: int = Field(5, ge=0)
    total_images: int = Field(200, gt=0)
    mem_iters: int = Field(5, gt=0)
    # `nlbench bench --train-step`: untimed warm-up iterations (autotuning, compilation), then timed ones.
    train_step_warmup: int = Field(2, ge=1)
    train_step_iters: int = Field(10, gt=0)


class ReleaseConfig(_Strict):
    """MMSegmentation's released checkpoint of this row."""

    mmseg0x_config: str
    stamp: str  # "<date>_<time>-<first 8 hex digits of the file's sha256>"
    base_url: str = "https://download.openmmlab.com/mmsegmentation/v0.5/nonlocal_net"

    @property
    def sha256_prefix(self) -> str:
        return self.stamp.rsplit("-", 1)[1]

    @property
    def filename(self) -> str:
        return f"{self.mmseg0x_config}_{self.stamp}.pth"

    @property
    def url(self) -> str:
        return f"{self.base_url.rstrip('/')}/{self.mmseg0x_config}/{self.filename}"

    @property
    def log_url(self) -> str:
        """The training log published beside the checkpoint: the stamp without its hash suffix."""
        stamp = self.stamp.rsplit("-", 1)[0]
        return f"{self.base_url.rstrip('/')}/{self.mmseg0x_config}/{self.mmseg0x_config}_{stamp}.log.json"


class GuardConfig(_Strict):
    """The training guard: the run's curves against its row's reference curve while it trains
    (benchmark/curves/checks.py, docs/CURVES.md). Not part of ``Recipe.hash``: it watches a run and
    never changes what it computes, so a run can be resumed with another guard setting."""

    # "released" (the row's published log; the committed smoke reference log in the smoke profile),
    # a path to a log file or folder, or null (no guard).
    reference: Optional[str] = None
    # The margins come from a noise model (docs/CURVES.md) so that a run as good as the reference is
    # stopped with probability at most false_stop over its whole schedule.
    false_stop: float = Field(0.01, gt=0.0, lt=0.5)
    false_drift: float = Field(0.10, gt=0.0, lt=1.0)  # ... and called drifting at most this often
    spread_floor: float = Field(SEED_STD_MIOU, gt=0.0)  # mIoU: the least seed-to-seed std assumed at any eval point
    patience: int = Field(2, ge=1)  # consecutive eval points below the stop margin that make a run diverged
    action: Literal["warn", "stop"] = "warn"
    loss_band: float = Field(0.15, gt=0.0)  # relative: how far a healthy run's loss may sit from the reference's
    warmup: float = Field(0.02, ge=0.0, lt=1.0)  # fraction of max_iters before the loss is compared

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: Any) -> Any:
        old = [k for k in ("margin", "final_margin") if isinstance(data, dict) and k in data]
        if old:
            raise ValueError(f"guard.{' and guard.'.join(old)}: replaced by guard.false_stop (the chance that a run "
                             "as good as the reference is stopped, default 0.01) and guard.spread_floor (the least "
                             "seed-to-seed mIoU std, default 0.5), from which the margins follow (docs/CURVES.md)")
        return data


class Recipe(_Strict):
    name: str
    profile: str = "full"
    model: ModelConfig
    data: DataConfig
    test: TestConfig
    schedule: ScheduleConfig
    runtime: RuntimeConfig
    bench: BenchConfig = BenchConfig()
    release: Optional[ReleaseConfig] = None
    guard: GuardConfig = GuardConfig()
    # Where the recipe came from; filled by load_recipe, not by the YAML.
    source: str = ""

    @property
    def effective_batch(self) -> int:
        return self.runtime.gpus * self.data.imgs_per_gpu

    def to_dict(self) -> Dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def _identity(self, with_data_root: bool = False) -> Dict[str, Any]:
        """What makes a run this run: the resolved recipe minus where it was read from, the guard
        (it watches a run without changing it) and where the data lies (``data.data_root``: the same
        dataset moved, or named by --data-root, is the same run; the root stays in the resolved recipe
        and the provenance)."""
        body = {k: v for k, v in self.to_dict().items() if k not in ("source", "guard")}
        if not with_data_root:
            body["data"] = {k: v for k, v in body["data"].items() if k != "data_root"}
        return body

    @property
    def hash(self) -> str:
        """sha256 of ``_identity`` (provenance of a run; names its work dir)."""
        return hashlib.sha256(json.dumps(self._identity(), sort_keys=True).encode()).hexdigest()

    @property
    def earlier_hashes(self) -> Tuple[str, ...]:
        """What earlier nlbench versions called ``hash`` for this run, which the checkpoints they wrote
        keep: the identity with ``data.data_root`` in it (before the data root left the hash)."""
        body = self._identity(with_data_root=True)
        return (hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest(),)

    @property
    def config_hash(self) -> str:
        """``hash`` without ``runtime.seed``: the same for every seed of one configuration, so that the
        seeds of a row are averaged only when they ran one configuration (run/records.py)."""
        body = self._identity()
        body["runtime"] = {k: v for k, v in body["runtime"].items() if k != "seed"}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- loading


def resolve_recipe_path(recipe: Union[str, Path]) -> Path:
    """A path to a YAML file, or a recipe name looked up in the recipes folder."""
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise NLBenchError("recipe file not found", path)
        return path
    candidate = RECIPES_DIR / f"{recipe}.yaml"
    if candidate.is_file():
        return candidate
    raise NLBenchError(f"no recipe named {str(recipe)!r} (looked for {candidate}); `nlbench list` shows them")


def list_recipe_paths() -> List[Path]:
    return sorted(p for p in RECIPES_DIR.glob("*.yaml"))


def read_yaml_mapping(path: Path) -> Dict[str, Any]:
    """A YAML file whose top level is a mapping (empty file: {}); every failure is one NLBenchError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise NLBenchError(f"cannot read: {exc.strerror}", path) from None
    except UnicodeDecodeError as exc:
        raise NLBenchError(f"not a UTF-8 text file (byte {exc.start}): expected YAML", path) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise NLBenchError(f"invalid YAML: {where}{problem}", path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise NLBenchError(f"expected a mapping at the top level, got {type(data).__name__}", path)
    return data


def deep_merge(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    """Mappings merge key by key; any other value (lists included) replaces the base value."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _load_tree(path: Path, chain: Tuple[Path, ...] = ()) -> Dict[str, Any]:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in chain + (path,))
        raise NLBenchError(f"_base_ inheritance cycle: {cycle}", path)
    data = read_yaml_mapping(path)
    bases = data.pop(_BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise NLBenchError("expected a path or a list of paths", path, _BASE_KEY)
    merged: Dict[str, Any] = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise NLBenchError(f"base file not found: {base_path}", path, _BASE_KEY)
        merged = deep_merge(merged, _load_tree(base_path, chain + (path,)))
    return deep_merge(merged, data)


def parse_set_options(items: Sequence[str]) -> List[Tuple[str, Any]]:
    """``a.b.c=value`` -> (``a.b.c``, YAML-typed value)."""
    parsed = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise NLBenchError(f"--set expects dotted.key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            raise NLBenchError(f"--set {key}: value {raw!r} is not valid YAML") from None
        parsed.append((key, value))
    return parsed


def _apply_set(tree: Dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise NLBenchError(f"--set {key}: {where} is a {type(child).__name__}, not a mapping")
        node = child
    node[parts[-1]] = value


def _format_validation_error(exc: ValidationError, path: Path) -> NLBenchError:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<top level>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required value is missing"
        got = err.get("input")
        got_text = "" if err["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{key}: {msg}{got_text}")
    first, rest = lines[0], lines[1:]
    more = "".join(f"; also {line}" for line in rest)  # one line: the CLI prints errors on one line
    return NLBenchError(f"invalid recipe: {first}{more}", path)


def load_recipe(
    recipe: Union[str, Path],
    overrides: Sequence[str] = (),
    profile: str = "full",
) -> Recipe:
    """Load, merge, apply the profile and overrides, and validate a recipe."""
    path = resolve_recipe_path(recipe)
    tree = _load_tree(path)
    profiles = tree.pop(_PROFILES_KEY, {}) or {}
    if not isinstance(profiles, dict):
        raise NLBenchError("expected a mapping of profile name -> overrides", path, _PROFILES_KEY)
    if profile != "full":
        if profile not in profiles:
            raise NLBenchError(
                f"unknown profile {profile!r}; this recipe has: {', '.join(['full'] + sorted(profiles))}", path
            )
        overlay = profiles[profile]
        if not isinstance(overlay, dict):
            raise NLBenchError("expected a mapping of overrides", path, f"{_PROFILES_KEY}.{profile}")
        tree = deep_merge(tree, overlay)
    for key, value in parse_set_options(overrides):
        _apply_set(tree, key, value)
    tree.setdefault("name", path.stem)
    tree["profile"] = profile
    tree["source"] = str(path)
    try:
        return Recipe.model_validate(_lists_to_tuples(tree))
    except ValidationError as exc:
        raise _format_validation_error(exc, path) from None


def published_recipe(recipe: Recipe) -> Recipe:
    """The row as published: its recipe file in the full profile, without the profile's overlay or
    ``--set`` overrides (a recipe built in code, without a file, stands for itself). The published
    run's effective batch is this recipe's, never the profile's."""
    return load_recipe(recipe.source) if recipe.source else recipe


def _lists_to_tuples(node: Any) -> Any:
    """YAML gives lists; the typed fields hold tuples (strict mode does not convert)."""
    if isinstance(node, dict):
        return {k: _lists_to_tuples(v) for k, v in node.items()}
    if isinstance(node, list):
        return tuple(_lists_to_tuples(v) for v in node)
    return node


def recipe_from_dict(data: Dict[str, Any]) -> Recipe:
    """A resolved recipe back from ``Recipe.to_dict()`` (a plan's job file carries it): the same recipe
    and hash, whatever its file says now. Raises NLBenchError when it is not one."""
    try:
        return Recipe.model_validate_json(json.dumps(data))
    except (ValueError, TypeError) as exc:
        why = " ".join(str(exc).split())[:200]
        raise NLBenchError(f"not a resolved recipe: {why}", key="recipe_resolved") from None


# The resolved recipe beside every run, as MMSeg keeps its config in the work dir: what ran is read
# from the run itself, not from a recipe file that may have changed since.
RESOLVED_RECIPE_FILE = "recipe.yaml"


def write_resolved_recipe(recipe: Recipe, work_dir: Union[str, Path], origin: str) -> Path:
    """WORK_DIR/recipe.yaml, written atomically: the resolved recipe under a header naming what ran it
    (``origin``), the file it came from and its hash."""
    header = (f"# resolved recipe of {origin} (recipe hash {recipe.hash})\n"
              f"# from {recipe.source or recipe.name}, profile {recipe.profile}\n")
    return atomic_write_text(Path(work_dir) / RESOLVED_RECIPE_FILE, header + recipe.to_yaml())
