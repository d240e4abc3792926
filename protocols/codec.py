"""The msgpack codec for every jodo message: one format for the wire, the journal and the tests.

A registered message is a frozen dataclass. On the wire it is ``[tag, version, [field values...]]``:
the tag names the class (its bare class name unless given), the version is the class's schema version,
and the values follow the dataclass's field order. Fields are only ever appended, with defaults, so an
older encoding (fewer values) still decodes; an encoding from a *newer* schema than this code knows is
refused, since it may carry meaning this code would silently drop.

Field types the codec understands: ``int``, ``str``, ``bool``, ``bytes``, ``None``, ``StrEnum`` /
``IntEnum``, ``Literal[...]``, ``tuple[X, ...]`` and ``tuple[X, Y]``, unions (``X | None``, unions of
registered messages) and other registered messages. Anything malformed raises `CodecError` and only
that: callers taking bytes from outside catch it, reject the input and carry on.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack

from protocols.errors import CodecError

__all__ = [
    "MAX_MESSAGE_BYTES",
    "CodecError",
    "decode",
    "decode_each",
    "decode_many",
    "encode",
    "encode_many",
    "flat_codec",
    "from_fields",
    "from_wire",
    "message",
    "registered",
    "spec_for",
    "to_wire",
]

#: Largest encoded message or batch accepted by `decode`: bigger input is refused before parsing.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

T = TypeVar("T")
_Decoder = Callable[[Any, str], Any]


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """How one registered class maps to and from its wire form."""

    cls: type[Any]
    tag: str
    version: int
    fields: tuple[str, ...]
    required: int  # how many leading fields have no default
    decoders: tuple[_Decoder, ...]
    factory: Callable[..., Any]  # builds the object from keyword fields: the class, or an interner
    trusted: Callable[[list[Any]], Any] | None = None  # fast builder for `trusted=True` decoding
    wire: Callable[[Any], list[Any]] | None = None  # the object's ``[tag, version, [values]]``
    checked: Callable[[list[Any]], Any] | None = None  # validating builder, `_MISS` when in doubt


_BY_TAG: dict[str, MessageSpec] = {}
_BY_CLASS: dict[type[Any], MessageSpec] = {}
_PENDING: list[tuple[type[Any], str, int, Callable[..., Any] | None]] = []


def message(
    cls: type[T] | None = None,
    *,
    tag: str | None = None,
    version: int = 1,
    factory: Callable[..., Any] | None = None,
) -> Any:
    """Register a frozen dataclass as a jodo message (``@message`` or ``@message(version=2)``).

    Tags and bare class names are unique across the project: Thespian dispatches on the bare class
    name, so two classes called the same would be one message to it. ``factory`` (keyword fields →
    object) replaces the class on decoding, e.g. to intern records many objects share.
    """

    def wrap(klass: type[T]) -> type[T]:
        _register(klass, tag or klass.__name__, version, factory)
        return klass

    return wrap(cls) if cls is not None else wrap


def _register(
    cls: type[Any], tag: str, version: int, factory: Callable[..., Any] | None = None
) -> None:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__qualname__} is not a dataclass")
    if version < 1:
        raise TypeError(f"{cls.__qualname__}: version must be >= 1")
    existing = _BY_TAG.get(tag)
    if existing is not None and existing.cls is not cls:
        raise TypeError(
            f"message tag {tag!r} is taken by {existing.cls.__module__}.{existing.cls.__qualname__}"
        )
    for other in _BY_CLASS:
        if other.__name__ == cls.__name__ and other is not cls:
            raise TypeError(f"class name {cls.__name__!r} is already a message in {other.__module__}")
    # Type hints may name classes defined later in the module: resolve them on first use.
    _PENDING.append((cls, tag, version, factory))
    _BY_TAG[tag] = MessageSpec(cls, tag, version, (), 0, (), cls)
    _BY_CLASS[cls] = _BY_TAG[tag]


def _resolve_pending() -> None:
    while _PENDING:
        cls, tag, version, factory = _PENDING[0]
        hints = typing.get_type_hints(cls)
        fields = [f for f in dataclasses.fields(cls) if f.init]
        required = 0
        for index, f in enumerate(fields):
            has_default = (
                f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            )
            if not has_default:
                if required != index:
                    raise TypeError(f"{cls.__qualname__}.{f.name}: fields without defaults come first")
                required += 1
        spec = MessageSpec(
            cls=cls,
            tag=tag,
            version=version,
            fields=tuple(f.name for f in fields),
            required=required,
            decoders=tuple(_decoder_for(hints[f.name]) for f in fields),
            factory=factory or cls,
            trusted=_trusted_builder(cls, fields, hints, factory),
            wire=_wire_builder(cls, tag, version, fields),
            checked=_checked_builder(cls, tag, fields, hints, factory),
        )
        _BY_TAG[tag] = spec
        _BY_CLASS[cls] = spec
        _PENDING.pop(0)


def spec_for(cls_or_tag: type[Any] | str) -> MessageSpec:
    """The registered spec of a class or tag; `CodecError` if there is none."""
    _resolve_pending()
    spec = _BY_TAG.get(cls_or_tag) if isinstance(cls_or_tag, str) else _BY_CLASS.get(cls_or_tag)
    if spec is None:
        raise CodecError(f"unknown message type {cls_or_tag!r}")
    return spec


def registered() -> dict[str, type[Any]]:
    """Every registered message class by tag (for inject, docs and the round-trip tests)."""
    _resolve_pending()
    return {tag: spec.cls for tag, spec in _BY_TAG.items()}


# ---------------------------------------------------------------- encoding


_WIRE: dict[type[Any], Callable[[Any], list[Any]]] = {}  # class → its `MessageSpec.wire`, once resolved


def to_wire(obj: Any) -> list[Any]:
    """The msgpack-ready form ``[tag, version, [values]]`` of a registered message."""
    wire = _WIRE.get(type(obj))
    if wire is None:
        spec = spec_for(type(obj))
        assert spec.wire is not None
        wire = _WIRE[type(obj)] = spec.wire
    return wire(obj)


def _default(obj: Any) -> Any:
    if type(obj) in _BY_CLASS:
        return to_wire(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


# A Packer costs ~0.4 µs to make and is not thread-safe (encode runs on several threads): one each.
_PACKERS = threading.local()


def _packer() -> Callable[[Any], bytes]:
    try:
        return _PACKERS.pack  # type: ignore[no-any-return]
    except AttributeError:
        pack = _PACKERS.pack = msgpack.Packer(default=_default, use_bin_type=True, autoreset=True).pack
        return pack  # type: ignore[no-any-return]


def encode(obj: Any) -> bytes:
    """Encode one registered message."""
    try:
        pack = _PACKERS.pack
    except AttributeError:
        pack = _packer()
    try:
        return pack(to_wire(obj))  # type: ignore[no-any-return]
    except BaseException:
        _PACKERS.__dict__.pop("pack", None)  # a Packer left mid-object must not pack again
        raise


def encode_many(objs: Iterable[Any]) -> bytes:
    """Encode a batch of registered messages as one msgpack array."""
    wire = [to_wire(o) for o in objs]
    try:
        pack = _PACKERS.pack
    except AttributeError:
        pack = _packer()
    try:
        return pack(wire)  # type: ignore[no-any-return]
    except BaseException:
        _PACKERS.__dict__.pop("pack", None)
        raise


# ---------------------------------------------------------------- decoding


def _unpack(data: bytes, max_bytes: int) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise CodecError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        # unpackb bounds every length by len(data), so a header cannot claim more than was sent
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types for bad bytes; all mean the same here
        raise CodecError(f"not valid msgpack: {type(exc).__name__}: {exc}") from None


def decode(
    data: bytes,
    *,
    expect: type[T] | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
    trusted: bool = False,
) -> T:
    """Decode one message; with ``expect``, it must be of that class (or a subclass).

    ``trusted=True`` is for bytes jodo itself wrote (its journal, snapshots, its own actors' batches):
    the structure and tags are still checked, but not each field's type or the records' invariants,
    which makes decoding 3-5 times faster. Never for bytes from outside.
    """
    value = _unpack(data, max_bytes)
    if trusted:
        return _from_wire_trusted(value, expect)  # type: ignore[no-any-return]
    return from_wire(value, expect=expect)  # type: ignore[no-any-return]


def decode_many(
    data: bytes,
    *,
    expect: type[T] | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
    trusted: bool = False,
) -> list[T]:
    """Decode a batch made by `encode_many`. One bad item fails the whole batch: its bytes are one unit.

    ``trusted``: as for `decode`."""
    value = _unpack(data, max_bytes)
    if not isinstance(value, list):
        raise CodecError(f"a batch is an array, got {type(value).__name__}")
    if trusted:
        return [_from_wire_trusted(item, expect) for item in value]
    return [from_wire(item, expect=expect, where=f"[{i}]") for i, item in enumerate(value)]


def _from_wire_trusted(value: Any, expect: type[Any] | None = None) -> Any:
    try:
        tag, version, values = value
        spec = _BY_TAG[tag]
        if spec.trusted is None:
            _resolve_pending()
            spec = _BY_TAG[tag]
        if expect is not None and not issubclass(spec.cls, expect):
            raise CodecError(f"{tag}: expected {expect.__name__}")
        if version > spec.version:
            raise CodecError(f"{tag}: schema version {version} is newer than {spec.version}")
        assert spec.trusted is not None
        return spec.trusted(values)
    except CodecError:
        raise
    except Exception as exc:  # trusted bytes that are not what we wrote: still only a CodecError
        raise CodecError(f"malformed trusted record: {type(exc).__name__}: {exc}") from None


def decode_each(
    data: bytes, *, expect: type[T] | None = None, max_bytes: int = MAX_MESSAGE_BYTES
) -> list[T | CodecError]:
    """Decode a batch item by item: a bad item becomes its `CodecError` in place, the rest stand.

    Raises `CodecError` only if the batch itself is not an array of items."""
    value = _unpack(data, max_bytes)
    if not isinstance(value, list):
        raise CodecError(f"a batch is an array, got {type(value).__name__}")
    out: list[T | CodecError] = []
    for i, item in enumerate(value):
        try:
            out.append(from_wire(item, expect=expect, where=f"[{i}]"))
        except CodecError as exc:
            out.append(exc)
    return out


def from_wire(value: Any, *, expect: type[Any] | None = None, where: str = "") -> Any:
    """Build a message from its ``[tag, version, [values]]`` form, checking every field."""
    if type(value) is list and len(value) == 3:  # the generated fast path (`_checked_builder`)
        tag, version, values = value
        spec = _BY_TAG.get(tag) if type(tag) is str else None
        if (
            spec is not None
            and spec.checked is not None
            and type(version) is int
            and 1 <= version <= spec.version
            and type(values) is list
            and (expect is None or issubclass(spec.cls, expect))
        ):
            obj = spec.checked(values)
            if obj is not _MISS:
                return obj
    return _from_wire_fields(value, expect, where)


def _from_wire_fields(value: Any, expect: type[Any] | None, where: str) -> Any:
    """`from_wire` field by field: the reference, and the path that names what is wrong."""
    _resolve_pending()
    if not isinstance(value, list) or len(value) != 3:
        raise CodecError(f"{where or 'message'}: expected [tag, version, values]")
    tag, version, values = value
    if not isinstance(tag, str):
        raise CodecError(f"{where or 'message'}: type tag must be a string")
    spec = _BY_TAG.get(tag)
    if spec is None:
        raise CodecError(f"{where or 'message'}: unknown message type {tag[:64]!r}")
    here = f"{where}{tag}" if where else tag
    if expect is not None and not issubclass(spec.cls, expect):
        raise CodecError(f"{here}: expected {expect.__name__}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CodecError(f"{here}: bad schema version {version!r}")
    if version > spec.version:
        raise CodecError(f"{here}: schema version {version} is newer than {spec.version}")
    if not isinstance(values, list):
        raise CodecError(f"{here}: field values must be an array")
    if not spec.required <= len(values) <= len(spec.fields):
        raise CodecError(
            f"{here}: {len(values)} field values, expected {spec.required}..{len(spec.fields)}"
        )
    kwargs = {
        name: dec(v, f"{here}.{name}")
        for name, dec, v in zip(spec.fields, spec.decoders, values, strict=False)
    }
    try:
        return spec.factory(**kwargs)
    except Exception as exc:  # an invariant the record's own constructor checks: input, not a bug
        raise CodecError(f"{here}: {exc}") from None


def from_fields(cls_or_tag: type[T] | str, fields: dict[str, Any]) -> T:
    """Build a message from named fields (JSON from an operator's inject), checked like the wire."""
    spec = spec_for(cls_or_tag)
    if not isinstance(fields, dict):
        raise CodecError(f"{spec.tag}: fields must be an object")
    unknown = set(fields) - set(spec.fields)
    if unknown:
        raise CodecError(f"{spec.tag}: unknown fields {sorted(unknown)}")
    missing = [n for n in spec.fields[: spec.required] if n not in fields]
    if missing:
        raise CodecError(f"{spec.tag}: missing fields {missing}")
    kwargs = {
        name: dec(fields[name], f"{spec.tag}.{name}")
        for name, dec in zip(spec.fields, spec.decoders, strict=True)
        if name in fields
    }
    try:
        return spec.factory(**kwargs)  # type: ignore[no-any-return]
    except Exception as exc:  # as in from_wire
        raise CodecError(f"{spec.tag}: {exc}") from None


# ---------------------------------------------------------------- trusted builders


def _converter(hint: Any, flat: bool = False) -> Callable[[Any], Any] | None:
    """How a trusted wire value becomes the field's value; None when it is already that value.

    ``flat``: nested records come without tag and version (`flat_codec`)."""
    origin = typing.get_origin(hint)
    if hint in (int, str, bool, bytes, Any, type(None)) or hint is None or origin is typing.Literal:
        return None
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        by_value = {m.value: m for m in hint}
        return by_value.__getitem__
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _flat_builder(hint) if flat else _from_wire_trusted
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _converter(args[0], flat)
            if item is None:
                return tuple
            return lambda v: tuple(map(item, v))
        items = [_converter(a, flat) for a in args]
        return lambda v: tuple(x if c is None else c(x) for c, x in zip(items, v, strict=True))
    if origin is typing.Union or origin is types.UnionType:
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        if all(isinstance(m, type) and dataclasses.is_dataclass(m) for m in members):
            if not flat:
                return lambda v: None if v is None else _from_wire_trusted(v)
            if len(members) != 1:  # without tags nothing says which record it is
                raise TypeError(f"no flat form for a union of records {hint!r}")
            record = _flat_builder(members[0])
            return lambda v: None if v is None else record(v)
        convs = [_converter(m, flat) for m in members]
        if len(convs) == 1 and convs[0] is not None:
            inner = convs[0]
            return lambda v: None if v is None else inner(v)
        if all(c is None for c in convs):
            return None
    raise TypeError(f"no trusted converter for {hint!r}")


def _trusted_builder(
    cls: type[Any], fields: list[dataclasses.Field[Any]], hints: dict[str, Any],
    factory: Callable[..., Any] | None, *, flat: bool = False, keyed: bool = False,
) -> Callable[..., Any]:
    """Generate a function building ``cls`` from trusted field values: no type checks, no
    ``__init__``; missing trailing fields take their defaults (an older schema).

    ``flat``: nested records are flat too (`flat_codec`). ``keyed``: the builder is
    ``build(key, values)``, the first field being ``key`` and ``values`` holding the others."""
    env: dict[str, Any] = {"new": object.__new__, "cls": cls, "factory": factory}
    lines = ["def build(key, values):" if keyed else "def build(values):", "    n = len(values)"]
    lines.append("    o = {}" if factory is not None else "    o = new(cls)")
    for i, f in enumerate(fields):
        if keyed and i == 0:
            value = "key"
        else:
            at = i - 1 if keyed else i
            record = _optional_record(hints[f.name]) if flat else None
            if record is not None:  # inlined: most such fields are None, and a call costs
                env[f"c{i}"] = _flat_builder(record)
                value = f"(None if (v{i} := values[{at}]) is None else c{i}(v{i}))"
            else:
                conv = _converter(hints[f.name], flat)
                if conv is not None:
                    env[f"c{i}"] = conv
                value = f"c{i}(values[{at}])" if conv is not None else f"values[{at}]"
            if f.default is not dataclasses.MISSING:
                env[f"d{i}"] = f.default
                value = f"({value} if n > {at} else d{i})"
            elif f.default_factory is not dataclasses.MISSING:
                env[f"d{i}"] = f.default_factory
                value = f"({value} if n > {at} else d{i}())"
        if factory is not None:
            lines.append(f"    o[{f.name!r}] = {value}")
        else:
            env[f"s{i}"] = cls.__dict__[f.name].__set__  # the slot's own setter: frozen is for users
            lines.append(f"    s{i}(o, {value})")
    lines.append("    return factory(**o)" if factory is not None else "    return o")
    exec("\n".join(lines), env)  # generated from the dataclass's own fields, nothing from input
    return env["build"]  # type: ignore[no-any-return]


def _wire_builder(
    cls: type[Any], tag: str, version: int, fields: list[dataclasses.Field[Any]]
) -> Callable[[Any], list[Any]]:
    """Generate ``wire(o) -> [tag, version, [o.f1, o.f2, ...]]`` (one list display, no getattr loop)."""
    env: dict[str, Any] = {"tag": tag, "version": version}
    values = ", ".join(f"o.{f.name}" for f in fields)
    exec(f"def wire(o):\n    return [tag, version, [{values}]]\n", env)  # from the dataclass's own fields
    return env["wire"]  # type: ignore[no-any-return]


#: `MessageSpec.checked` could not vouch for a record: `from_wire`'s field-by-field path decides.
_MISS: Any = object()
_INLINE_CHECKS = {
    int: "type({v}) is int",
    str: "type({v}) is str",
    bool: "type({v}) is bool",
    bytes: "type({v}) is bytes",
}


def _checked_builder(
    cls: type[Any], tag: str, fields: list[dataclasses.Field[Any]], hints: dict[str, Any],
    factory: Callable[..., Any] | None,
) -> Callable[[list[Any]], Any]:
    """Generate the validating fast path of `from_wire` for one class: every field checked inline
    (exact types, as msgpack produces them) or by its decoder, then the factory (its invariants).

    It accepts a subset of what the field-by-field path accepts and builds the same object; on any
    doubt (missing trailing fields, a type or value it does not vouch for, a raising constructor) it
    returns `_MISS` and `from_wire` takes the field-by-field path, which gives the exact error."""
    env: dict[str, Any] = {"MISS": _MISS, "factory": factory or cls, "CodecError": CodecError}
    lines = ["def checked(values):", f"    if len(values) != {len(fields)}:", "        return MISS"]
    lines.append("    try:")
    for i, f in enumerate(fields):
        hint = hints[f.name]
        lines.append(f"        v{i} = values[{i}]")
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and len(members) == 1
        inner = members[0] if optional else hint
        check = _INLINE_CHECKS.get(inner)
        if check is not None:
            test = check.format(v=f"v{i}")
            if optional:
                test = f"v{i} is None or {test}"
            lines += [f"        if not ({test}):", "            return MISS"]
        elif isinstance(inner, type) and issubclass(inner, enum.Enum):
            env[f"e{i}"] = {m.value: m for m in inner}.get
            kinds = " or ".join(f"type(v{i}) is {t.__name__}" for t in (str, int))
            convert = f"        v{i} = e{i}(v{i}) if ({kinds}) else None"
            if optional:
                lines += [f"        if v{i} is not None:", "    " + convert, f"            if v{i} is None:",
                          "                return MISS"]
            else:
                lines += [convert, f"        if v{i} is None:", "            return MISS"]
        else:
            env[f"d{i}"] = _decoder_for(hint)
            lines.append(f"        v{i} = d{i}(v{i}, {f'{tag}.{f.name}'!r})")
    args = ", ".join(f"{f.name}=v{i}" for i, f in enumerate(fields))
    lines += [f"        return factory({args})", "    except Exception:", "        return MISS"]
    exec("\n".join(lines), env)  # generated from the dataclass's own fields, nothing from input
    return env["checked"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------- flat codec (resident records)


@dataclass(frozen=True, slots=True)
class FlatCodec:
    """Packs one registered class compactly, for records jodo keeps resident and snapshots itself.

    The flat form is the field values only, ``[v1, v2, ...]``, nested records likewise (no tag and no
    version anywhere), optionally without the key field (the first field: the caller keeps it, e.g.
    as a dict key). Fields are only ever appended, so an older flat form still unpacks, its missing
    trailing fields taking their defaults; what it cannot say is its schema version, so whoever
    stores flat forms stores `versions` alongside and checks it with `check_versions` before unpacking.
    Unpacking is trusted (as ``decode(..., trusted=True)``): only for bytes jodo wrote itself.
    """

    cls: type[Any]
    key: str | None
    versions: dict[str, int]  # tag -> schema version of every record the flat form holds
    pack: Callable[[Any], bytes]
    unpack: Callable[..., Any]  # (data) -> obj, or (key, data) -> obj with a key field

    def check_versions(self, versions: dict[str, int]) -> None:
        """Refuse flat forms written by a newer schema of any record (`CodecError`)."""
        for tag, version in versions.items():
            mine = self.versions.get(tag)
            if mine is None or version > mine:
                raise CodecError(f"flat {self.cls.__name__}: {tag} schema version {version} is unknown here")


_FLAT_BUILDERS: dict[type[Any], Callable[[Any], Any]] = {}
_FLAT_CODECS: dict[tuple[type[Any], str | None], FlatCodec] = {}


def flat_codec(cls: type[Any], *, key: str | None = None) -> FlatCodec:
    """The flat codec of a registered class (see `FlatCodec`), generated once per class.

    Unions of several records cannot be flat (nothing would say which one it is): `TypeError`.
    """
    cached = _FLAT_CODECS.get((cls, key))
    if cached is not None:
        return cached
    _resolve_pending()
    spec_for(cls)  # a registered class, or CodecError
    fields = [f for f in dataclasses.fields(cls) if f.init]
    if key is not None and (not fields or fields[0].name != key):
        raise TypeError(f"{cls.__name__}: the key field must be the first field, not {key!r}")
    hints = typing.get_type_hints(cls)
    build = _trusted_builder(cls, fields, hints, None, flat=True, keyed=key is not None)
    versions: dict[str, int] = {}
    _collect_versions(cls, versions)
    encode_src, env = _flat_encoder(cls, skip_first=key is not None)
    exec(encode_src, env)  # generated from the dataclass's own fields, nothing from input
    to_flat = env["to_flat"]
    packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack
    unpackb = msgpack.unpackb

    def pack(obj: Any) -> bytes:
        return packb(to_flat(obj))  # type: ignore[no-any-return]

    if key is not None:

        def unpack(k: str, data: bytes) -> Any:
            try:
                return build(k, unpackb(data, use_list=False, raw=False))
            except Exception as exc:  # not what we wrote: still only a CodecError
                raise CodecError(f"malformed flat {cls.__name__}: {type(exc).__name__}: {exc}") from None

    else:

        def unpack(data: bytes) -> Any:  # type: ignore[misc]
            try:
                return build(unpackb(data, use_list=False, raw=False))
            except Exception as exc:  # as above
                raise CodecError(f"malformed flat {cls.__name__}: {type(exc).__name__}: {exc}") from None

    codec = FlatCodec(cls=cls, key=key, versions=versions, pack=pack, unpack=unpack)
    _FLAT_CODECS[(cls, key)] = codec
    return codec


_SCALARS = (int, str, bool, bytes, type(None))
_MEMO_SIZE = 65_536


def _flat_builder(cls: type[Any]) -> Callable[[Any], Any]:
    """Build a record from its flat form. A record's factory interns what many resident objects
    share; the flat form is what is resident, so an unpacked record is transient and the factory is
    only used (behind a memo) for records of scalar fields, where the memo is also the faster way."""
    build = _FLAT_BUILDERS.get(cls)
    if build is None:
        spec = spec_for(cls)
        fields = [f for f in dataclasses.fields(cls) if f.init]
        hints = typing.get_type_hints(cls)
        factory = None if spec.factory is cls else spec.factory
        if factory is not None and all(_scalar(hints[f.name]) for f in fields):
            build = _memoized(_trusted_builder(cls, fields, hints, factory, flat=True))
        else:
            build = _trusted_builder(cls, fields, hints, None, flat=True)
        _FLAT_BUILDERS[cls] = build
    return build


def _optional_record(hint: Any) -> type[Any] | None:
    """R for a field of type ``R | None`` (R a record), else None."""
    origin = typing.get_origin(hint)
    if origin is not typing.Union and origin is not types.UnionType:
        return None
    args = typing.get_args(hint)
    members = [a for a in args if a is not type(None)]
    if len(args) == 2 and len(members) == 1 and dataclasses.is_dataclass(members[0]):
        return members[0]  # type: ignore[return-value]
    return None


def _scalar(hint: Any) -> bool:
    if hint in _SCALARS or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return True
    return (origin is typing.Union or origin is types.UnionType) and all(map(_scalar, typing.get_args(hint)))


def _memoized(build: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A record with a factory (one that interns what many objects share) and only scalar fields:
    equal flat forms give the one object (frozen records, so sharing them is safe)."""
    memo: dict[Any, Any] = {}

    def build_once(values: Any) -> Any:
        obj = memo.get(values)
        if obj is None:
            obj = build(values)
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            memo[values] = obj
        return obj

    return build_once


def _records_in(hint: Any) -> list[type[Any]]:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return [hint]
    return [r for arg in typing.get_args(hint) for r in _records_in(arg)]


def _collect_versions(cls: type[Any], into: dict[str, int]) -> None:
    spec = spec_for(cls)
    if spec.tag in into:
        return
    into[spec.tag] = spec.version
    for hint in typing.get_type_hints(cls).values():
        for record in _records_in(hint):
            _collect_versions(record, into)


def _flat_encoder(cls: type[Any], *, skip_first: bool) -> tuple[str, dict[str, Any]]:
    """Source of ``to_flat(o)``: one list display of the field values, nested records inlined."""
    names = iter(f"v{i}" for i in range(1_000_000))

    def record(klass: type[Any], src: str, skip: bool = False) -> str:
        hints = typing.get_type_hints(klass)
        fields = [f for f in dataclasses.fields(klass) if f.init][1 if skip else 0 :]
        if src == "o":
            var, first = "o", "o"
        else:
            var = next(names)
            first = f"({var} := {src})"
        parts = []
        for i, f in enumerate(fields):
            parts.append(value(hints[f.name], f"{first if i == 0 else var}.{f.name}"))
        if not parts:
            raise TypeError(f"{klass.__name__}: a record without fields has no flat form")
        return "[" + ", ".join(parts) + "]"

    def value(hint: Any, src: str) -> str:
        records = _records_in(hint)
        if not records:
            return src  # scalars, enums (str/int subclasses), tuples of them: msgpack packs them as is
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            return record(hint, src)
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin is typing.Union or origin is types.UnionType:
            members = [a for a in args if a is not type(None)]
            if len(members) == 1 and isinstance(members[0], type) and dataclasses.is_dataclass(members[0]):
                var = next(names)
                return f"(None if ({var} := {src}) is None else {record(members[0], var)})"
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            item = next(names)
            return f"[{value(args[0], item)} for {item} in {src}]"
        raise TypeError(f"{cls.__name__}: no flat form for {hint!r}")

    return f"def to_flat(o):\n    return {record(cls, 'o', skip_first)}\n", {}


# ---------------------------------------------------------------- field decoders


def _decoder_for(hint: Any) -> _Decoder:
    origin = typing.get_origin(hint)
    if hint is Any:
        return lambda v, where: v
    if hint is type(None) or hint is None:
        return _none
    if hint is bool:
        return _bool
    if hint is int:
        return _int
    if hint is str:
        return _str
    if hint is bytes:
        return _bytes
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_decoder(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _nested_decoder(hint)
    if origin is typing.Literal:
        return _literal_decoder(typing.get_args(hint))
    if origin is tuple:
        return _tuple_decoder(typing.get_args(hint))
    if origin is typing.Union or origin is types.UnionType:
        return _union_decoder(typing.get_args(hint))
    raise TypeError(f"the codec cannot carry fields of type {hint!r}")


def _none(v: Any, where: str) -> None:
    if v is not None:
        raise CodecError(f"{where}: expected nil, got {type(v).__name__}")


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise CodecError(f"{where}: expected a boolean, got {type(v).__name__}")
    return v


def _int(v: Any, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise CodecError(f"{where}: expected an integer, got {type(v).__name__}")
    return v


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise CodecError(f"{where}: expected a string, got {type(v).__name__}")
    return v


def _bytes(v: Any, where: str) -> bytes:
    if not isinstance(v, bytes):
        raise CodecError(f"{where}: expected bytes, got {type(v).__name__}")
    return v


def _enum_decoder(cls: type[enum.Enum]) -> _Decoder:
    def dec(v: Any, where: str) -> Any:
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise CodecError(f"{where}: expected a {cls.__name__} value")
        try:
            return cls(v)
        except ValueError:
            raise CodecError(f"{where}: {str(v)[:64]!r} is not a {cls.__name__}") from None

    return dec


def _nested_decoder(cls: type[Any]) -> _Decoder:
    return lambda v, where: from_wire(v, expect=cls, where=f"{where}:")


def _literal_decoder(allowed: tuple[Any, ...]) -> _Decoder:
    def dec(v: Any, where: str) -> Any:
        if isinstance(v, bool) != any(isinstance(a, bool) for a in allowed) or v not in allowed:
            raise CodecError(f"{where}: {str(v)[:64]!r} is not one of {list(allowed)}")
        return v

    return dec


def _tuple_decoder(args: tuple[Any, ...]) -> _Decoder:
    if len(args) == 2 and args[1] is Ellipsis:
        item = _decoder_for(args[0])

        def dec_var(v: Any, where: str) -> tuple[Any, ...]:
            if not isinstance(v, list | tuple):
                raise CodecError(f"{where}: expected an array, got {type(v).__name__}")
            return tuple(item(x, f"{where}[{i}]") for i, x in enumerate(v))

        return dec_var
    items = tuple(_decoder_for(a) for a in args)

    def dec_fixed(v: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(v, list | tuple) or len(v) != len(items):
            raise CodecError(f"{where}: expected an array of {len(items)}")
        return tuple(d(x, f"{where}[{i}]") for i, (d, x) in enumerate(zip(items, v, strict=True)))

    return dec_fixed


def _union_decoder(args: tuple[Any, ...]) -> _Decoder:
    allows_none = type(None) in args
    members = [a for a in args if a is not type(None)]
    classes = [m for m in members if isinstance(m, type) and dataclasses.is_dataclass(m)]
    if classes and len(classes) == len(members):
        allowed = tuple(classes)

        def dec_msgs(v: Any, where: str) -> Any:
            if v is None and allows_none:
                return None
            obj = from_wire(v, where=f"{where}:")
            if not isinstance(obj, allowed):
                raise CodecError(f"{where}: {type(obj).__name__} is not allowed here")
            return obj

        return dec_msgs
    if len(members) == 1:
        inner = _decoder_for(members[0])
        return lambda v, where: None if v is None else inner(v, where)
    decoders = [_decoder_for(m) for m in members]

    def dec_any(v: Any, where: str) -> Any:
        if v is None and allows_none:
            return None
        for d in decoders:
            try:
                return d(v, where)
            except CodecError:
                continue
        raise CodecError(f"{where}: {type(v).__name__} fits none of the allowed types")

    return dec_any
