from prism.gen.common.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TextKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TEXT_KIND_UNSPECIFIED: _ClassVar[TextKind]
    TEXT_KIND_QUERY: _ClassVar[TextKind]
    TEXT_KIND_PASSAGE: _ClassVar[TextKind]

class Space(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPACE_UNSPECIFIED: _ClassVar[Space]
    SPACE_NATIVE: _ClassVar[Space]
    SPACE_SHARED: _ClassVar[Space]
TEXT_KIND_UNSPECIFIED: TextKind
TEXT_KIND_QUERY: TextKind
TEXT_KIND_PASSAGE: TextKind
SPACE_UNSPECIFIED: Space
SPACE_NATIVE: Space
SPACE_SHARED: Space

class EmbedRequest(_message.Message):
    __slots__ = ("texts", "media", "text_kind", "space", "ephemeral")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    TEXT_KIND_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    EPHEMERAL_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    media: _containers.RepeatedCompositeFieldContainer[_types_pb2.Media]
    text_kind: TextKind
    space: Space
    ephemeral: bool
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., media: _Optional[_Iterable[_Union[_types_pb2.Media, _Mapping]]] = ..., text_kind: _Optional[_Union[TextKind, str]] = ..., space: _Optional[_Union[Space, str]] = ..., ephemeral: _Optional[bool] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("vector", "error", "views", "shared")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    vector: _types_pb2.Vector
    error: _types_pb2.ItemError
    views: _containers.RepeatedCompositeFieldContainer[_types_pb2.Vector]
    shared: _types_pb2.Vector
    def __init__(self, vector: _Optional[_Union[_types_pb2.Vector, _Mapping]] = ..., error: _Optional[_Union[_types_pb2.ItemError, _Mapping]] = ..., views: _Optional[_Iterable[_Union[_types_pb2.Vector, _Mapping]]] = ..., shared: _Optional[_Union[_types_pb2.Vector, _Mapping]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("embeddings", "model_id", "dim", "space", "shared_dim")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    SHARED_DIM_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    model_id: str
    dim: int
    space: Space
    shared_dim: int
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., model_id: _Optional[str] = ..., dim: _Optional[int] = ..., space: _Optional[_Union[Space, str]] = ..., shared_dim: _Optional[int] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("model_id", "modality", "dim", "shared_dim", "max_batch", "device", "views", "shared_id")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    SHARED_DIM_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    SHARED_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    modality: str
    dim: int
    shared_dim: int
    max_batch: int
    device: str
    views: int
    shared_id: str
    def __init__(self, model_id: _Optional[str] = ..., modality: _Optional[str] = ..., dim: _Optional[int] = ..., shared_dim: _Optional[int] = ..., max_batch: _Optional[int] = ..., device: _Optional[str] = ..., views: _Optional[int] = ..., shared_id: _Optional[str] = ...) -> None: ...
