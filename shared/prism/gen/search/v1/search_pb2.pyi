from prism.gen.common.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchOptions(_message.Message):
    __slots__ = ("k", "filters", "cursor", "facets", "viewed", "rerank")
    K_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    FACETS_FIELD_NUMBER: _ClassVar[int]
    VIEWED_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    k: int
    filters: _types_pb2.Filters
    cursor: str
    facets: _containers.RepeatedScalarFieldContainer[str]
    viewed: _containers.RepeatedScalarFieldContainer[str]
    rerank: bool
    def __init__(self, k: _Optional[int] = ..., filters: _Optional[_Union[_types_pb2.Filters, _Mapping]] = ..., cursor: _Optional[str] = ..., facets: _Optional[_Iterable[str]] = ..., viewed: _Optional[_Iterable[str]] = ..., rerank: _Optional[bool] = ...) -> None: ...

class SearchTextRequest(_message.Message):
    __slots__ = ("text", "options")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    text: str
    options: SearchOptions
    def __init__(self, text: _Optional[str] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ...) -> None: ...

class SearchImageRequest(_message.Message):
    __slots__ = ("image", "options")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    image: _types_pb2.Media
    options: SearchOptions
    def __init__(self, image: _Optional[_Union[_types_pb2.Media, _Mapping]] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ...) -> None: ...

class SearchVideoRequest(_message.Message):
    __slots__ = ("video", "options")
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    video: _types_pb2.Media
    options: SearchOptions
    def __init__(self, video: _Optional[_Union[_types_pb2.Media, _Mapping]] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ...) -> None: ...

class SimilarRequest(_message.Message):
    __slots__ = ("product_ids", "options", "exclude_same_group")
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_SAME_GROUP_FIELD_NUMBER: _ClassVar[int]
    product_ids: _containers.RepeatedScalarFieldContainer[str]
    options: SearchOptions
    exclude_same_group: bool
    def __init__(self, product_ids: _Optional[_Iterable[str]] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ..., exclude_same_group: _Optional[bool] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("id", "title", "score", "image_url", "matched")
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    id: str
    title: str
    score: float
    image_url: str
    matched: str
    def __init__(self, id: _Optional[str] = ..., title: _Optional[str] = ..., score: _Optional[float] = ..., image_url: _Optional[str] = ..., matched: _Optional[str] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "next_cursor", "took_ms", "reranked", "facets", "rerank_skipped")
    class FacetsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FacetCounts
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FacetCounts, _Mapping]] = ...) -> None: ...
    HITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    TOOK_MS_FIELD_NUMBER: _ClassVar[int]
    RERANKED_FIELD_NUMBER: _ClassVar[int]
    FACETS_FIELD_NUMBER: _ClassVar[int]
    RERANK_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    next_cursor: str
    took_ms: float
    reranked: bool
    facets: _containers.MessageMap[str, FacetCounts]
    rerank_skipped: str
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., next_cursor: _Optional[str] = ..., took_ms: _Optional[float] = ..., reranked: _Optional[bool] = ..., facets: _Optional[_Mapping[str, FacetCounts]] = ..., rerank_skipped: _Optional[str] = ...) -> None: ...

class FacetCounts(_message.Message):
    __slots__ = ("counts",)
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.ScalarMap[str, int]
    def __init__(self, counts: _Optional[_Mapping[str, int]] = ...) -> None: ...

class SimilarResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResponse, _Mapping]]] = ...) -> None: ...

class GetProductRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class Product(_message.Message):
    __slots__ = ("id", "title", "description", "attributes", "image_urls", "price", "currency")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URLS_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    id: str
    title: str
    description: str
    attributes: _containers.ScalarMap[str, str]
    image_urls: _containers.RepeatedScalarFieldContainer[str]
    price: float
    currency: str
    def __init__(self, id: _Optional[str] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., image_urls: _Optional[_Iterable[str]] = ..., price: _Optional[float] = ..., currency: _Optional[str] = ...) -> None: ...
