"""A fake ``tensorrt`` module (10.x and 11.x) for tests, strict about the real API's names.

The API surface comes from the reference files in ``tests/trt_api/`` (copied from the TensorRT bindings'
own pybind metadata: module names, class methods with their parameter names, properties and enum
members). The double:

- rejects any module name, class attribute, property or enum member that does not exist in that
  version (``BuilderFlag.FP16`` or ``IBuilderConfig.int8_calibrator`` on 11 raise AttributeError),
  and writes to read-only properties;
- checks every call against the reference signature (parameter names, arity) of that version;
- implements the builder subset mrdeploy uses, recording every call in ``module.calls`` as
  ``(qualified name, {param: value})`` so tests can check the translation from profiles to builder calls;
- parses the ONNX bytes given to ``OnnxParser.parse`` with onnx (so a corrupt model fails to parse) and
  records the network's inputs and float16 initializers; ``module.unsupported_ops`` makes the parser
  fail on those op types, like a real parser error;
- ``build_serialized_network`` returns a plan whose bytes are a JSON summary of the network and config.

Install with :func:`install` (a pytest ``monkeypatch``): ``trt = install(monkeypatch, "10")``.
Enum values are the member's position in the reference list (the real numeric values are not in it).
"""

from __future__ import annotations

import json
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

API_DIR = Path(__file__).resolve().parent / "trt_api"
VERSIONS = {"10": ("10.16.1.11", "tensorrt-10.16-api.txt"), "11": ("11.4.0.106", "tensorrt-11.4-api.txt")}


# --------------------------------------------------------------------------------------- reference


@dataclass
class ClassApi:
    methods: dict[str, list[list[str]]] = field(default_factory=dict)  # name -> overloads' param names
    properties: dict[str, bool] = field(default_factory=dict)  # name -> read-only
    constants: set[str] = field(default_factory=set)

    def names(self) -> set[str]:
        return set(self.methods) | set(self.properties) | self.constants


@dataclass
class Api:
    version: str
    module_names: set[str]
    classes: dict[str, ClassApi]
    enums: dict[str, list[str]]


def _split_params(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(<":
            depth += 1
        elif ch in "])>":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip().split(":", 1)[0].split("=", 1)[0].strip() for p in parts]


def load_api(major: str) -> Api:
    version, filename = VERSIONS[major]
    text = (API_DIR / filename).read_text()
    module_names: set[str] = set()
    classes: dict[str, ClassApi] = {}
    enums: dict[str, list[str]] = {}
    current = None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("## module-level names"):
            module_names = {n.strip() for n in lines[i + 1].split(",") if n.strip()}
        elif line.startswith("## class "):
            current = classes.setdefault(line[len("## class "):].strip(), ClassApi())
        elif line.startswith("## enum "):
            name, _, members = line[len("## enum "):].partition(":")
            enums[name.strip()] = [m.strip() for m in members.split(",") if m.strip() and m.strip() != "ABSENT"]
            current = None
        elif line.startswith("## "):
            current = None
        elif current is not None and line.startswith("  "):
            body = line.strip()
            if body.startswith("property "):
                name = body[len("property "):].split()[0]
                current.properties[name] = "(read-only)" in body
            elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", body):
                current.constants.add(body)
            else:
                m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\((.*)\)(?: -> .*)?$", body)
                if not m:
                    continue
                name, params = m.group(1), m.group(2)
                if params.strip() == "*args, **kwargs":
                    current.methods.setdefault(name, [])
                    continue
                names = [p for p in _split_params(params) if p != "self"]
                current.methods.setdefault(name, []).append(names)
    return Api(version, module_names, classes, enums)


# --------------------------------------------------------------------------------------- strict base


class ApiDrift(AttributeError):
    """A name or signature that does not exist in this TensorRT version."""


class _Strict:
    """Checks attribute access and calls against the reference class ``_api_name``."""

    _api_name = ""
    _module: FakeTensorRT

    def __getattribute__(self, name):
        if name.startswith("_"):
            return object.__getattribute__(self, name)
        cls_api = object.__getattribute__(self, "_module")._api.classes[object.__getattribute__(self, "_api_name")]
        if name not in cls_api.names():
            raise ApiDrift(
                f"tensorrt {object.__getattribute__(self, '_module').__version__}: "
                f"{object.__getattribute__(self, '_api_name')}.{name} does not exist"
            )
        value = object.__getattribute__(self, name)
        if name in cls_api.methods and callable(value):
            return _checked(self, name, value, cls_api.methods[name])
        return value

    def __setattr__(self, name, value):
        if name.startswith("_"):
            return object.__setattr__(self, name, value)
        module = object.__getattribute__(self, "_module")
        cls_api = module._api.classes[self._api_name]
        if name not in cls_api.properties:
            raise ApiDrift(f"tensorrt {module.__version__}: {self._api_name}.{name} is not a property")
        if cls_api.properties[name]:
            raise ApiDrift(f"tensorrt {module.__version__}: {self._api_name}.{name} is read-only")
        module._record(f"{self._api_name}.{name}=", {"value": value})
        object.__setattr__(self, name, value)


def _checked(obj, name, fn, overloads):
    module = object.__getattribute__(obj, "_module")
    api_name = object.__getattribute__(obj, "_api_name")

    def call(*args, **kwargs):
        if overloads:
            ok = False
            for params in overloads:
                if len(args) > len(params):
                    continue
                given = set(params[: len(args)]) | set(kwargs)
                if set(kwargs) - set(params) or len(given) != len(args) + len(kwargs):
                    continue
                ok = True
                bound = dict(zip(params, args), **kwargs)
                break
            if not ok:
                raise TypeError(
                    f"tensorrt {module.__version__}: {api_name}.{name} takes {overloads}, "
                    f"got {len(args)} positional and {sorted(kwargs)}"
                )
        else:
            bound = {"args": args, **kwargs}
        module._record(f"{api_name}.{name}", bound)
        return fn(**bound) if overloads else fn(*args, **kwargs)

    return call


class _Enum:
    def __init__(self, module, name: str, members: list[str]):
        self._module, self._name = module, name
        self._members = {m: _EnumValue(name, m, i) for i, m in enumerate(members)}

    def __getattr__(self, item):
        if item.startswith("_"):
            raise AttributeError(item)
        if item not in self._members:
            raise ApiDrift(f"tensorrt {self._module.__version__}: {self._name}.{item} does not exist")
        return self._members[item]


@dataclass(frozen=True)
class _EnumValue:
    enum: str
    name: str
    value: int

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"{self.enum}.{self.name}"


# --------------------------------------------------------------------------------------- the fakes


class FakeTensorRT(types.ModuleType):
    """The fake module. ``calls`` records every API call; ``unsupported_ops`` makes parsing fail."""

    def __init__(self, major: str):
        super().__init__("tensorrt")
        api = load_api(major)
        object.__setattr__(self, "_api", api)
        object.__setattr__(self, "__version__", api.version)
        object.__setattr__(self, "calls", [])
        object.__setattr__(self, "unsupported_ops", set())
        object.__setattr__(self, "fail_build", False)
        impl = _implementations(self)
        for name, members in api.enums.items():
            if name in api.module_names:
                impl[name] = _Enum(self, name, members)
        object.__setattr__(self, "_impl", impl)

    def _record(self, name: str, args: dict) -> None:
        self.calls.append((name, args))

    def calls_to(self, name: str) -> list[dict]:
        return [a for n, a in self.calls if n == name]

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in self._api.module_names:
            raise ApiDrift(f"tensorrt {self.__version__}: module has no name {name!r}")
        if name not in self._impl:
            raise NotImplementedError(f"the test double does not implement tensorrt.{name}")
        return self._impl[name]


def _implementations(module: FakeTensorRT) -> dict:
    api = module._api

    def strict(api_name):
        if api_name not in api.classes:
            return None

        class Base(_Strict):
            _api_name = api_name
            _module = module

        return Base

    class Logger(strict("Logger")):
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self, min_severity=2):
            self._min = min_severity

        def log(self, severity, msg):
            pass

    class Dims(strict("Dims")):
        def __init__(self, shape=()):
            self._shape = tuple(int(d) for d in shape)

        def __iter__(self):
            return iter(self._shape)

        def __len__(self):
            return len(self._shape)

        def __eq__(self, other):
            return tuple(self) == tuple(other)

        def __repr__(self):
            return f"Dims{self._shape}"

    class IHostMemory(bytes):
        @property
        def nbytes(self):
            return len(self)

        @property
        def dtype(self):
            return "uint8"

    class ITimingCache(strict("ITimingCache")):
        def __init__(self, data: bytes):
            self._entries = int(data.split(b":")[1]) if data.startswith(b"FAKE-TIMING-CACHE:") else 0
            if data and not data.startswith(b"FAKE-TIMING-CACHE:"):
                self._entries = -1  # a cache from elsewhere: set_timing_cache will refuse it

        def serialize(self):
            return IHostMemory(b"FAKE-TIMING-CACHE:%d" % self._entries)

        def reset(self):
            self._entries = 0
            return True

    class IOptimizationProfile(strict("IOptimizationProfile")):
        def __init__(self):
            self._shapes = {}

        def set_shape(self, input, min, opt, max):
            self._shapes[input] = (tuple(min), tuple(opt), tuple(max))

        def get_shape(self, input):
            return [Dims(s) for s in self._shapes.get(input, ((), (), ()))]

    class IBuilderConfig(strict("IBuilderConfig")):
        def __init__(self):
            self._flags, self._pools, self._profiles, self._cache = set(), {}, [], None
            self._hw = None

        def set_memory_pool_limit(self, pool, pool_size):
            self._pools[pool.name] = int(pool_size)

        def get_memory_pool_limit(self, pool):
            return self._pools.get(pool.name, 0)

        def create_timing_cache(self, serialized_timing_cache):
            return ITimingCache(bytes(serialized_timing_cache))

        def set_timing_cache(self, cache, ignore_mismatch):
            if cache._entries < 0 and not ignore_mismatch:
                return False
            self._cache = cache
            return True

        def get_timing_cache(self):
            return self._cache

        def add_optimization_profile(self, profile):
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def set_flag(self, flag):
            self._flags.add(flag.name)

        def get_flag(self, flag):
            return flag.name in self._flags

        def clear_flag(self, flag):
            self._flags.discard(flag.name)

    class INetworkDefinition(strict("INetworkDefinition")):
        def __init__(self, flags):
            self._flags, self._inputs, self._layers, self._parsed = flags, {}, 0, False
            self._fp16_inits = self._float_inits = 0

        @property
        def num_layers(self):
            return self._layers

        @property
        def num_inputs(self):
            return len(self._inputs)

    class ParserError:  # nvonnxparser::IParserError: code/desc/file/func/line/node
        def __init__(self, desc, node):
            self._desc, self._node = desc, node

        def desc(self):
            return self._desc

        def node(self):
            return self._node

        def code(self):
            return "UNSUPPORTED_NODE"

        def __str__(self):
            return f"In node {self._node}: {self._desc}"

    class OnnxParser(strict("OnnxParser")):
        def __init__(self, network, logger):
            self._network, self._errors = network, []

        @property
        def num_errors(self):
            return len(self._errors)

        def get_error(self, index):
            return self._errors[index]

        def parse(self, model, path=None):
            import onnx

            try:
                proto = onnx.ModelProto.FromString(bytes(model))
                onnx.checker.check_model(proto)
            except Exception as e:
                self._errors.append(ParserError(f"Failed to parse ONNX model: {e}", -1))
                return False
            for idx, n in enumerate(proto.graph.node):
                if n.op_type in module.unsupported_ops:
                    self._errors.append(ParserError(f"No importer registered for op: {n.op_type}", idx))
            if self._errors:
                return False
            inits = {t.name for t in proto.graph.initializer}
            net = self._network
            for vi in proto.graph.input:
                if vi.name not in inits:
                    net._inputs[vi.name] = vi.type.tensor_type.elem_type
            net._layers = len(proto.graph.node)
            net._fp16_inits = sum(1 for t in proto.graph.initializer if t.data_type == 10)
            net._float_inits = sum(1 for t in proto.graph.initializer if t.data_type == 1)
            net._parsed = True
            return True

    class Builder(strict("Builder")):
        def __init__(self, logger):
            self._logger = logger

        def create_network(self, flags=0):
            return INetworkDefinition(int(flags))

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config, kernel_text=None):
            if module.fail_build or not network._parsed or len(config._profiles) != 1:
                return None
            prof = config._profiles[0]
            if set(prof._shapes) != set(network._inputs):
                return None  # a real builder refuses a profile that does not cover every input
            for lo, opt, hi in prof._shapes.values():
                if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
                    return None
            if config._cache is not None:
                config._cache._entries += 1  # the build adds its timings to the shared cache
            summary = {
                "version": module.__version__,
                "flags": network._flags,
                "inputs": {k: [list(s) for s in v] for k, v in prof._shapes.items()},
                "builder_flags": sorted(config._flags),
                "pools": config._pools,
                "hardware_compatibility_level": repr(object.__getattribute__(config, "__dict__").get("hardware_compatibility_level")),
                "fp16_initializers": network._fp16_inits,
                "float_initializers": network._float_inits,
                "layers": network._layers,
            }
            return IHostMemory(b"FAKEPLAN" + json.dumps(summary, sort_keys=True).encode())

    impl = {
        "Logger": Logger,
        "Dims": Dims,
        "Builder": Builder,
        "OnnxParser": OnnxParser,
        "IBuilderConfig": IBuilderConfig,
        "INetworkDefinition": INetworkDefinition,
        "IOptimizationProfile": IOptimizationProfile,
        "ITimingCache": ITimingCache,
        "IHostMemory": IHostMemory,
        "ParserError": ParserError,
    }
    _check_signatures(api, impl)
    return impl


def _check_signatures(api: Api, impl: dict) -> None:
    """The double's own methods must take the reference's parameter names (one overload at least)."""
    import inspect

    for name, cls in impl.items():
        cls_api = api.classes.get(name)
        if cls_api is None or not isinstance(cls, type) or not issubclass(cls, _Strict):
            continue
        for meth, fn in vars(cls).items():
            if meth.startswith("_") or not callable(fn) or meth not in cls_api.methods:
                continue
            params = [p for p in inspect.signature(fn).parameters if p != "self"]
            overloads = cls_api.methods[meth]
            if overloads and not any(params[: len(o)] == o for o in overloads):
                raise AssertionError(f"double {name}.{meth}{params} does not match tensorrt {api.version} {overloads}")


def install(monkeypatch, major: str = "10", gpu: tuple[str, str] = ("NVIDIA Fake A10", "8.6")) -> FakeTensorRT:
    """Put a fake ``tensorrt`` of that major version in sys.modules and a fake GPU behind gpu_info."""
    fake = FakeTensorRT(str(major))
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    import mrdeploy.exporter.tensorrt_build as tb

    monkeypatch.setattr(tb, "gpu_info", lambda: gpu)
    return fake
