from prism.gen.common.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VectorList(_message.Message):
    __slots__ = ("vectors",)
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[_types_pb2.Vector]
    def __init__(self, vectors: _Optional[_Iterable[_Union[_types_pb2.Vector, _Mapping]]] = ...) -> None: ...

class ModalityVectors(_message.Message):
    __slots__ = ("vectors",)
    class VectorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: VectorList
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[VectorList, _Mapping]] = ...) -> None: ...
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.MessageMap[str, VectorList]
    def __init__(self, vectors: _Optional[_Mapping[str, VectorList]] = ...) -> None: ...

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

class ProductVectors(_message.Message):
    __slots__ = ("product_id", "record_json", "content_hash", "media_fingerprint", "modalities", "keep")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_JSON_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    record_json: str
    content_hash: str
    media_fingerprint: str
    modalities: ModalityVectors
    keep: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, product_id: _Optional[str] = ..., record_json: _Optional[str] = ..., content_hash: _Optional[str] = ..., media_fingerprint: _Optional[str] = ..., modalities: _Optional[_Union[ModalityVectors, _Mapping]] = ..., keep: _Optional[_Iterable[str]] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("products",)
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[ProductVectors]
    def __init__(self, products: _Optional[_Iterable[_Union[ProductVectors, _Mapping]]] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("upserted", "model_id")
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    model_id: str
    def __init__(self, upserted: _Optional[int] = ..., model_id: _Optional[str] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("product_ids",)
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    product_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, product_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class StateRequest(_message.Message):
    __slots__ = ("product_ids",)
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    product_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, product_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ProductState(_message.Message):
    __slots__ = ("content_hash", "media_fingerprint", "vectors")
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    content_hash: str
    media_fingerprint: str
    vectors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, content_hash: _Optional[str] = ..., media_fingerprint: _Optional[str] = ..., vectors: _Optional[_Iterable[str]] = ...) -> None: ...

class StateResponse(_message.Message):
    __slots__ = ("products", "indexed")
    class ProductsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ProductState
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ProductState, _Mapping]] = ...) -> None: ...
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    products: _containers.MessageMap[str, ProductState]
    indexed: int
    def __init__(self, products: _Optional[_Mapping[str, ProductState]] = ..., indexed: _Optional[int] = ...) -> None: ...
