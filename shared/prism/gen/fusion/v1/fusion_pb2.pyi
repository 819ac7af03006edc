from prism.gen.common.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModalityVectors(_message.Message):
    __slots__ = ("vectors",)
    class VectorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _types_pb2.Vector
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_types_pb2.Vector, _Mapping]] = ...) -> None: ...
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.MessageMap[str, _types_pb2.Vector]
    def __init__(self, vectors: _Optional[_Mapping[str, _types_pb2.Vector]] = ...) -> None: ...

class FuseRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ModalityVectors]
    def __init__(self, items: _Optional[_Iterable[_Union[ModalityVectors, _Mapping]]] = ...) -> None: ...

class FusedVectors(_message.Message):
    __slots__ = ("vectors", "weights")
    class VectorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _types_pb2.Vector
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_types_pb2.Vector, _Mapping]] = ...) -> None: ...
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.MessageMap[str, _types_pb2.Vector]
    weights: _containers.ScalarMap[str, float]
    def __init__(self, vectors: _Optional[_Mapping[str, _types_pb2.Vector]] = ..., weights: _Optional[_Mapping[str, float]] = ...) -> None: ...

class FuseResponse(_message.Message):
    __slots__ = ("items", "model_id")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[FusedVectors]
    model_id: str
    def __init__(self, items: _Optional[_Iterable[_Union[FusedVectors, _Mapping]]] = ..., model_id: _Optional[str] = ...) -> None: ...
