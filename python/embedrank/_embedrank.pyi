from os import PathLike
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union, overload

import numpy as np
import numpy.typing as npt

__version__: str

_CacheDir = Union[str, PathLike, Sequence[Union[str, PathLike]], None]

class EmbedrankError(RuntimeError): ...

class Embedder:
    def __init__(
        self,
        model: str,
        device: str = "cpu",
        dtype: Optional[str] = None,
        cache_dir: _CacheDir = None,
        max_length: Optional[int] = None,
    ) -> None: ...
    def encode(
        self,
        texts: Union[str, Sequence[str]],
        batch_size: int = 32,
        normalize: Optional[bool] = True,
        prompt_name: Optional[str] = None,
        prompt: Optional[str] = None,
        instruction: Optional[str] = None,
        dimensions: Optional[int] = None,
        convert_to_numpy: bool = True,
    ) -> Union[npt.NDArray[np.float32], List[float], List[List[float]]]: ...
    @property
    def dim(self) -> int: ...
    @property
    def max_length(self) -> int: ...
    @property
    def model_name(self) -> str: ...
    @property
    def prompts(self) -> List[str]: ...

class Reranker:
    def __init__(
        self,
        model: str,
        device: str = "cpu",
        dtype: Optional[str] = None,
        cache_dir: _CacheDir = None,
        max_length: Optional[int] = None,
    ) -> None: ...
    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: Optional[int] = None,
        return_documents: bool = False,
        batch_size: int = 32,
        instruction: Optional[str] = None,
    ) -> List[Dict[str, Any]]: ...
    @overload
    def predict(self, pairs: Tuple[str, str], batch_size: int = 32, instruction: Optional[str] = None) -> float: ...
    @overload
    def predict(
        self, pairs: Sequence[Tuple[str, str]], batch_size: int = 32, instruction: Optional[str] = None
    ) -> npt.NDArray[np.float32]: ...
    @property
    def max_length(self) -> int: ...
    @property
    def model_name(self) -> str: ...
