"""Options of the alto backend, given as keyword arguments to ``compile``."""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .process.gpus import visible_gpus
from .process.ray_actors import ACTOR_OPTIONS
from .process.routing import make_policy

if TYPE_CHECKING:
    from .lm.engines import EngineSpec

EXECUTORS = ("auto", "process", "ray", "inline")
STARTS = ("first_run", "compile")
TRANSPORTS = ("ipc", "tcp")
#: what a stage table may set (``replicas`` comes from ``[instances]`` or ``replicas=``)
STAGE_SETTINGS = (
    "process",
    "stateful",
    "group_depth",
    "gpus",
    "policy",
    "threads",
    "run_ahead",
    "max_calls_per_instance",
    "max_memory_mb",
    "stuck_after",
    "max_pending",
    "ray",
    "assertions",
)
#: the most instances of one stage, and threads of one instance (a typo's million
#: processes would take the machine down before any error could be read)
MAX_REPLICAS = 1024
MAX_THREADS = 4096
#: stage settings that do not move a stage to workers: scheduling, and the checks
#: that run in the app around the node (``assertions.py``)
SCHEDULING_SETTINGS = ("run_ahead", "assertions")


@dataclasses.dataclass(frozen=True)
class AltoOptions:
    """What ``compile(backend="alto", **options)`` accepts.

    executor: where node code runs. ``"auto"`` (default): in the app process, as on
        stock LangGraph, except the stages that ask for worker processes (``replicas``,
        ``gpus``, a stage table, ``process=True``); LM stages always run in workers.
        ``"process"``: every node in worker processes ("instances") behind a router
        process, over pyzmq (a stage may stay with ``process=False``). ``"ray"``: as
        ``"process"``, with the instances as Ray actors on a Ray cluster (see ``ray``
        below and ``ray_address``). ``"inline"``: every node in the app process (async
        nodes on its event loop, sync nodes on its threads). Scheduling (run-ahead,
        streaming) is the same on all four.
    replicas: instances per stage, e.g. ``{"search": 4}`` (default 1 each). Stages are
        named after their nodes; a subgraph's nodes as ``"subgraph_node/inner_node"``.
    stages: what each stage needs, e.g. ``{"bm25": {"stateful": True, "gpus": 0}}``:
        ``process`` (run in worker processes; False: stay in the app process),
        ``stateful`` (items of one aggregation group reach one instance),
        ``group_depth`` (ancestry frames a group leaves out, default 1: one fan-out's
        items), ``gpus`` (per instance), ``policy`` (a routing policy name or object),
        ``threads`` (sync node calls an instance runs at once, default 64),
        ``run_ahead`` (False: the node's tasks never start before their superstep;
        it stays where it runs), ``max_calls_per_instance`` and ``max_memory_mb``
        (an instance past either is recycled: it gets no new calls, and is replaced
        once its calls have finished), ``stuck_after`` (seconds an instance's event
        loop may not answer before it is replaced, default 3; 0: never),
        ``max_pending`` (the most calls one instance holds; a call beyond fails at
        once with ``StageOverloaded``, which a ``RetryPolicy`` retries), ``ray``
        (True, or a table of actor options: the stage's instances are Ray actors;
        ``num_cpus``, ``memory``, ``resources`` such as ``{"node_b": 1}``, ``node_id``,
        ``placement_group`` and ``bundle_index``, ``scheduling_strategy``
        (``"SPREAD"`` or ``"DEFAULT"``), ``runtime_env``; ``gpus`` becomes ``num_gpus``;
        amounts are 0 or at least 0.0001, Ray's precision), ``assertions`` (model
        assertions over the node's output by import path, ``"module:function"`` or
        ``{check = "module:function", severity = "fail"}``: see ``assertions.py``).
    run_ahead: False turns run-ahead off for the whole app: every task waits for its
        superstep, as on stock LangGraph (streaming nodes still stream).
    config: a TOML file, or a list of them read in order, holding the two parts of the
        ALTO paper's two files: ``[stages.NAME]`` tables (what each stage needs) and an
        ``[instances]`` table (how many of each). Keyword options override the files.
    start: ``"first_run"`` (default) starts the processes when the app first runs;
        ``"compile"`` starts them in ``compile``.
    transport: ``"ipc"`` (the default: unix sockets in a private 0700 directory) or
        ``"tcp"`` (bound to ``host``: the loopback by default, or with stages on a Ray
        cluster, this node's address as Ray knows it). Stages on Ray need ``"tcp"``,
        their default.
    ray_address: the Ray cluster that stages on Ray are placed on (``"HOST:PORT"``).
        If None, the app's own ``ray.init()`` connection is used, or else a one-node
        cluster on this machine is started with the app and stopped with it.
    lm: the language models the app serves, as LM stages that ``ChatAlto(model=NAME)``
        calls reach, e.g. ``{"smollm2-135m": {"engine": "transformers", "replicas": 2}}``.
        Per model: ``engine`` (``"transformers"``, the default, or ``"simulated"``),
        ``replicas``, ``gpus`` (per instance; default 1 where GPUs are visible, for
        engines that use them), ``policy`` (default ``"prefix_cache_aware"``); every
        other key is an option of the engine (``model``, ``max_batch``, ...). CPU
        instances of the transformers engine split the cores (``threads``) by default;
        on Ray, they take their ``num_cpus``, and only vLLM and SGLang ask Ray for a GPU
        by default (one each), whatever this machine has.
    """

    executor: str = "auto"
    replicas: Mapping[str, int] | None = None
    stages: Mapping[str, Mapping[str, Any]] | None = None
    config: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None
    start: str = "first_run"
    transport: str | None = None
    host: str | None = None
    lm: Mapping[str, Mapping[str, Any]] | None = None
    run_ahead: bool = True
    ray_address: str | None = None

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("executor", self.executor, EXECUTORS),
            ("start", self.start, STARTS),
            ("transport", "ipc" if self.transport is None else self.transport, TRANSPORTS),
        ):
            if value not in allowed:
                raise ValueError(f"alto option {name}={value!r} is not one of {', '.join(allowed)}")
        if not isinstance(self.run_ahead, bool):
            raise ValueError(f"alto option run_ahead must be True or False, got {self.run_ahead!r}")
        # checked here, not at bind time: a non-string host failed deep in the socket
        # module ("str, bytes or bytearray expected"), an empty one killed the router
        if self.host is not None and (not isinstance(self.host, str) or not self.host):
            raise ValueError(
                f"alto option host must be a non-empty address or host name, got {self.host!r}"
            )
        if self.ray_address is not None and (
            not isinstance(self.ray_address, str) or not self.ray_address
        ):
            raise ValueError(
                "alto option ray_address must be a Ray cluster's address (HOST:PORT), "
                f"got {self.ray_address!r}"
            )
        per_stage = self._per_stage()
        placing = {n for n, st in per_stage.items() if set(st) - set(SCHEDULING_SETTINGS)}
        if placing and self.executor == "inline":
            raise ValueError(
                "alto options replicas/stages/config place stages in worker processes, "
                "but executor='inline' runs every node in this process; use the default "
                "executor ('auto') or 'process'"
            )
        for name, settings in per_stage.items():
            if settings.get("process") is False and _on_ray(settings.get("ray")):
                raise ValueError(
                    f"alto options: stage {name!r} has process=False (it runs in this "
                    "process) but a ray setting (its instances are Ray actors)"
                )
            if settings.get("process") is False and settings.get("replicas", 1) > 1:
                raise ValueError(
                    f"alto options: stage {name!r} has process=False (it runs in this "
                    f"process) but replicas={settings['replicas']}: instances are worker "
                    "processes"
                )
        on_ray = self.executor == "ray" or any(_on_ray(st.get("ray")) for st in per_stage.values())
        if on_ray and self.transport == "ipc":
            raise ValueError(
                "alto option transport='ipc' reaches only this machine, but stages are "
                "placed on Ray; use transport='tcp' (the default with Ray)"
            )
        if self.ray_address is not None and not on_ray:
            raise ValueError(
                f"alto option ray_address={self.ray_address!r} is given, but no stage is "
                "placed on Ray: use executor='ray', or a stage's ray setting"
            )
        if self.transport is None:
            object.__setattr__(self, "transport", "tcp" if on_ray else "ipc")
        object.__setattr__(self, "_settings", per_stage)
        object.__setattr__(
            self, "lm_stages", _lm_stages(self.lm, self.stage_settings, self.executor)
        )

    def _per_stage(self) -> dict[str, dict[str, Any]]:
        """Stage name -> its settings, from the config file then the keywords."""
        merged: dict[str, dict[str, Any]] = {}
        paths = [self.config] if isinstance(self.config, (str, os.PathLike)) else self.config
        # a number, a dict or a None in the list failed with "'int' object is not
        # iterable" or read a dict's keys as file names: say what config takes
        if paths is not None and (
            not isinstance(paths, (list, tuple))
            or not all(isinstance(p, (str, os.PathLike)) for p in paths)
        ):
            raise TypeError(
                "alto option config must be a TOML file path or a list of them, "
                f"got {self.config!r}"
            )
        # where each stage name was set: an unknown one's error names its file
        origins: dict[Any, list[str]] = {}

        def merge(stages: Any, instances: Any, where: str) -> None:
            _merge(merged, stages, instances, where)
            for name in (*stages, *instances):
                origins.setdefault(name, []).append(where)

        for path in paths or ():
            stages, instances = _read_config(path)
            merge(stages, instances, f"config file {os.fspath(path)!r}")
        merge(self.stages or {}, self.replicas or {}, "options")
        object.__setattr__(self, "_origins", origins)
        return merged

    def stage_settings(self, name: str) -> dict[str, Any]:
        """What the user set for stage ``name`` (config files, then keywords): keys of
        ``STAGE_SETTINGS`` and ``replicas``; empty if nothing."""
        return dict(self._settings.get(name, {}))  # type: ignore[attr-defined]

    def stage_assertions(self) -> list[Any]:
        """The model assertions the stage tables declare (``assertions.Assertion``)."""
        return [a for st in self._settings.values() for a in st.get("assertions", ())]  # type: ignore[attr-defined]

    def check_stage_names(self, known: Sequence[str]) -> None:
        # key=repr: names of mixed types (a typo's int) must not fail the sort itself
        unknown = sorted(set(self._settings) - set(known), key=repr)  # type: ignore[attr-defined]
        if unknown:
            origins = self._origins  # type: ignore[attr-defined]
            where = dict.fromkeys(w for n in unknown for w in origins.get(n, ()))
            raise ValueError(
                f"alto: no stage named {', '.join(map(repr, unknown))} in this graph "
                f"(named in {', '.join(where) or 'options'}); "
                f"its stages are: {', '.join(map(repr, known)) or '(none)'}"
            )

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> AltoOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(
                f"unknown alto option(s): {', '.join(unknown)}; "
                f"known options are: {', '.join(sorted(known))}"
            )
        return cls(**kwargs)


#: the settings of an ``lm`` entry that are the stage's; the rest are the engine's
_LM_STAGE_KEYS = ("engine", "replicas", "gpus", "policy")
#: engines that run on a GPU when one is visible
_GPU_ENGINES = frozenset({"transformers", "vllm", "sglang"})
#: those that run on nothing else
_GPU_ONLY_ENGINES = frozenset({"vllm", "sglang"})


@dataclasses.dataclass(frozen=True)
class LMStage:
    """One served model: its stage's settings and its engine."""

    model: str
    replicas: int
    gpus: int
    policy: Any
    engine: EngineSpec

    @property
    def stage(self) -> str:
        return f"lm:{self.model}"


def _lm_stages(
    lm: Mapping[str, Mapping[str, Any]] | None,
    stage_settings: Callable[[str], Mapping[str, Any]],
    executor: str,
) -> tuple[LMStage, ...]:
    if lm is None:
        return ()
    from .lm.engines import EngineSpec  # only apps that serve models import lm/

    if not isinstance(lm, Mapping):
        raise TypeError(f"alto option lm must map model names to settings, got {lm!r}")
    out = []
    for model, settings in lm.items():
        where = f"alto option lm[{model!r}]"
        if not isinstance(model, str) or not model:
            raise ValueError(
                f"alto option lm: model names must be non-empty strings, got {model!r}"
            )
        if not isinstance(settings, Mapping):
            raise TypeError(f"{where} must be a dict of settings, got {settings!r}")
        engine = settings.get("engine", "transformers")
        options = {k: v for k, v in settings.items() if k not in _LM_STAGE_KEYS}
        if engine in ("transformers", "openai", "vllm", "sglang"):
            options.setdefault("model", model)  # the model's name is the one loaded/asked
        spec = EngineSpec(engine, options)
        try:
            spec.check()
        except (TypeError, ValueError, ImportError) as exc:
            raise type(exc)(f"{where}: {exc}") from None
        replicas = settings.get("replicas", 1)
        if (
            isinstance(replicas, bool)
            or not isinstance(replicas, int)
            or not 1 <= replicas <= MAX_REPLICAS
        ):
            raise ValueError(
                f"{where}: replicas must be an integer between 1 and {MAX_REPLICAS}, "
                f"got {replicas!r}"
            )
        # on Ray, the cluster's GPUs and cores count, not this machine's: an engine
        # that needs a GPU asks Ray for one, the others run where Ray puts them
        ray = ray_options(stage_settings(f"lm:{model}"), executor)
        gpus = settings.get("gpus")
        if gpus is None:
            if ray is not None:
                gpus = 1 if engine in _GPU_ONLY_ENGINES else 0
            else:
                gpus = 1 if engine in _GPU_ENGINES and visible_gpus() else 0
        elif isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
            raise ValueError(f"{where}: gpus must be an integer >= 0, got {gpus!r}")
        if engine == "transformers" and not gpus:
            # CPU instances share the cores rather than each taking all of them; an
            # actor takes the cores it asked Ray for (or torch's default)
            if ray is None:
                options.setdefault("threads", max(1, (os.cpu_count() or 1) // replicas))
            elif ray.get("num_cpus", 0) >= 1:
                options.setdefault("threads", int(ray["num_cpus"]))
        policy = settings.get("policy", "prefix_cache_aware")
        try:
            make_policy(policy, stateful=False)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{where}: {exc}") from None
        out.append(LMStage(model, replicas, gpus, policy, spec))
    return tuple(out)


def _read_config(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"alto: cannot read config file {os.fspath(path)!r}: {exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        # UnicodeDecodeError: a file that is not UTF-8 (tomllib's own error names no file)
        raise ValueError(f"alto: config file {os.fspath(path)!r} is not valid TOML: {exc}") from exc
    extra = sorted(set(data) - {"stages", "instances"})
    if extra:
        raise ValueError(
            f"alto: config file {os.fspath(path)!r} has unknown table(s) {', '.join(extra)}; "
            "expected [stages.NAME] and [instances]"
        )
    return data.get("stages", {}), data.get("instances", {})


def _merge(
    into: dict[str, dict[str, Any]],
    stages: Mapping[str, Any],
    instances: Mapping[str, Any],
    where: str,
) -> None:
    # each named, with what it got (one message for both named neither)
    if not isinstance(stages, Mapping):
        raise TypeError(
            f"alto {where}: stages must map stage names to tables of settings, got {stages!r}"
        )
    if not isinstance(instances, Mapping):
        raise TypeError(
            f"alto {where}: replicas ([instances]) must map stage names to counts, "
            f"got {instances!r}"
        )
    for name, fields in stages.items():
        if not isinstance(fields, Mapping):
            raise TypeError(
                f"alto {where}: stage {name!r} must be a table of settings, got {fields!r}"
            )
        bad = sorted(set(fields) - set(STAGE_SETTINGS))
        if bad:
            raise ValueError(
                f"alto {where}: stage {name!r} has unknown setting(s) {', '.join(bad)}; "
                f"known: {', '.join(STAGE_SETTINGS)}"
            )
        for key, least, most in (
            ("group_depth", 0, None),
            ("gpus", 0, None),
            ("threads", 1, MAX_THREADS),
            ("max_calls_per_instance", 1, None),
            ("max_pending", 1, None),
        ):
            value = fields.get(key, least)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < least
                or (most is not None and value > most)
            ):
                bound = f"between {least} and {most}" if most else f">= {least}"
                raise ValueError(
                    f"alto {where}: stage {name!r}: {key} must be an integer {bound}, got {value!r}"
                )
        for key, positive in (("max_memory_mb", True), ("stuck_after", False)):
            value = fields.get(key, 1)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
                or (positive and value == 0)
            ):
                least = "> 0" if positive else ">= 0"
                raise ValueError(
                    f"alto {where}: stage {name!r}: {key} must be a number {least}, got {value!r}"
                )
        for key in ("stateful", "process", "run_ahead"):
            if key in fields and not isinstance(fields[key], bool):
                raise ValueError(  # with the value, as the other settings' errors
                    f"alto {where}: stage {name!r}: {key} must be true or false, "
                    f"got {fields[key]!r}"
                )
        if "ray" in fields:
            _check_ray(fields["ray"], f"alto {where}: stage {name!r}: ray")
        if "assertions" in fields:
            from .assertions import from_config

            fields = {
                **fields,
                "assertions": from_config(
                    fields["assertions"], name, f"alto {where}: stage {name!r}: assertions"
                ),
            }
        if fields.get("policy") is not None:
            try:
                make_policy(fields["policy"], stateful=bool(fields.get("stateful")))
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"alto {where}: stage {name!r}: {exc}") from None
        into.setdefault(name, {}).update(fields)
    for name, n in instances.items():
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_REPLICAS:
            raise ValueError(
                f"alto {where}: stage {name!r} needs between 1 and {MAX_REPLICAS} instances, "
                f"got {n!r}"
            )
        into.setdefault(name, {})["replicas"] = n


def _check_ray(value: Any, where: str) -> None:
    """A stage's ``ray`` setting: true, false, or a table of actor options."""
    if isinstance(value, bool):
        return
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be true, false or a table of actor options, got {value!r}")
    for key, v in value.items():
        types = ACTOR_OPTIONS.get(key)
        if types is None:
            raise ValueError(
                f"{where} has unknown option {key!r}; known: {', '.join(ACTOR_OPTIONS)}"
            )
        if isinstance(v, bool) or not isinstance(v, types):
            kinds = " or ".join(t.__name__ for t in types)
            raise ValueError(f"{where}: {key} must be a {kinds}, got {v!r}")
        if types == (int, float) and not _ray_amount(v):
            raise ValueError(
                f"{where}: {key} must be 0 or a number >= 0.0001 (Ray's precision), got {v!r}"
            )
    for key, amount in (value.get("resources") or {}).items():
        if key in ("CPU", "GPU", "memory"):
            instead = {"CPU": "ray.num_cpus", "GPU": "the stage's gpus", "memory": "ray.memory"}
            raise ValueError(f"{where}: resources may not name {key!r}; set {instead[key]}")
        if not isinstance(key, str) or isinstance(amount, bool) or not _ray_amount(amount):
            raise ValueError(
                f"{where}: resources must map resource names to 0 or amounts >= 0.0001, "
                f"got {key!r}: {amount!r}"
            )
    if value.get("scheduling_strategy", "DEFAULT") not in ("DEFAULT", "SPREAD"):
        raise ValueError(
            f"{where}: scheduling_strategy must be 'DEFAULT' or 'SPREAD', "
            f"got {value['scheduling_strategy']!r}"
        )
    pins = [k for k in ("node_id", "placement_group", "scheduling_strategy") if k in value]
    if len(pins) > 1:
        raise ValueError(f"{where}: set at most one of {', '.join(pins)}")
    if "bundle_index" in value and "placement_group" not in value:
        raise ValueError(f"{where}: bundle_index needs a placement_group")
    if value.get("bundle_index", 0) < 0:
        raise ValueError(
            f"{where}: bundle_index must be >= 0 (leave it out for any bundle), "
            f"got {value['bundle_index']!r}"
        )


def _on_ray(value: Any) -> bool:
    """Whether a stage's (checked) ``ray`` setting puts it on Ray: true or a table,
    an empty one included."""
    return value is not None and value is not False


def _ray_amount(v: Any) -> bool:
    """A resource amount Ray accepts: finite, >= 0, and 0 or at least its granularity."""
    return isinstance(v, (int, float)) and math.isfinite(v) and (v == 0 or v >= 1e-4)


def ray_options(settings: Mapping[str, Any], executor: str) -> dict[str, Any] | None:
    """The Ray actor options of a stage (None: its instances are not on Ray)."""
    value = settings.get("ray", True if executor == "ray" else None)
    if not _on_ray(value):
        return None
    return {} if value is True else dict(value)
