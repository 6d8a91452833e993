"""NumPy-only reader of PyTorch's legacy (pre-1.6, non-zip) `torch.save` format; no torch, no code run.

A legacy file is five records back to back:

1. pickle of the magic number 0x1950a86a20f9469cfc6c;
2. pickle of the protocol version 1001;
3. pickle of the writer's sys info ({'little_endian': ..., 'type_sizes': ...});
4. the object pickle (e.g. a state dict). Tensors are `torch._utils._rebuild_tensor_v2(storage,
   offset, size, stride, ...)` calls whose storage is a persistent id
   ('storage', torch.<Type>Storage, key, location, numel, view_metadata);
5. pickle of the sorted storage keys, then per key: int64 element count n (little-endian) and
   n * itemsize raw little-endian bytes.

Records 1-5 are read with `_RestrictedUnpickler`, whose `find_class` resolves only the globals
listed in `_GLOBALS` (to the functions here) and refuses any other with `UnsafeFileError`
before anything of it runs. Tensors become NumPy arrays (copies; views of one storage allowed).
"""

import collections
import dataclasses
import io
import pickle
from typing import Any, BinaryIO

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# torch.<name> storage classes -> element dtype (little-endian, as written by x86/ARM hosts).
STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class UnsafeFileError(pickle.UnpicklingError):
    """The file names a global outside the allowed set, or is not a legacy torch file."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    """A strided view of a storage, resolved once the storage bytes have been read."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(
    storage: _StorageRef, offset: int, size: tuple, stride: tuple, *_: Any
) -> _TensorRef:
    """Stands in for torch._utils._rebuild_tensor(_v2); requires_grad, hooks and metadata are dropped."""
    if not isinstance(storage, _StorageRef):
        raise UnsafeFileError(f"tensor rebuilt from {type(storage).__name__}, not from a storage")
    return _TensorRef(
        storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride)
    )


def _rebuild_parameter(data: _TensorRef, *_: Any) -> _TensorRef:
    """Stands in for torch._utils._rebuild_parameter: a Parameter is read as its tensor."""
    return data


_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, storages: dict[str, _StorageRef] | None = None):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _GLOBALS:
            raise UnsafeFileError(
                f"refusing to load global '{module}.{name}': a legacy torch weights file only needs "
                f"{sorted(f'{m}.{n}' for m, n in _GLOBALS)}"
            )
        return _GLOBALS[(module, name)]

    def persistent_load(self, pid: Any) -> _StorageRef:
        if self._storages is None or not (
            isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
        ):
            raise UnsafeFileError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise UnsafeFileError(f"persistent id {pid!r} names no known storage type")
        if len(pid) > 5 and pid[5] is not None:
            raise UnsafeFileError("storage views (pre-0.4 files) are not supported")
        ref = self._storages.setdefault(
            str(key), _StorageRef(str(key), storage_type.dtype, int(numel))
        )
        if ref.dtype != storage_type.dtype:
            raise UnsafeFileError(f"storage {key!r} is used with two dtypes")
        return ref


def _load(file: BinaryIO, storages: dict[str, _StorageRef] | None = None) -> Any:
    return _RestrictedUnpickler(file, storages).load()


def _view(tensor: _TensorRef, data: dict[str, np.ndarray]) -> np.ndarray:
    storage = data[tensor.storage.key]
    if len(tensor.size) != len(tensor.stride) or any(s < 0 for s in (*tensor.size, *tensor.stride)):
        raise UnsafeFileError(f"malformed tensor size {tensor.size} / stride {tensor.stride}")
    if 0 in tensor.size:
        return np.zeros(tensor.size, storage.dtype)
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride))
    if tensor.offset < 0 or last >= storage.size:
        raise UnsafeFileError(
            f"tensor reaches past its storage {tensor.storage.key!r} ({storage.size} elements)"
        )
    view = np.lib.stride_tricks.as_strided(
        storage[tensor.offset :],
        tensor.size,
        tuple(s * storage.itemsize for s in tensor.stride),
        writeable=False,
    )
    return np.array(view, dtype=storage.dtype.newbyteorder("="))


def _resolve(obj: Any, data: dict[str, np.ndarray]) -> Any:
    """The unpickled object with every _TensorRef replaced by its array (dicts, lists, tuples walked)."""
    if isinstance(obj, _TensorRef):
        return _view(obj, data)
    if isinstance(obj, dict):
        return type(obj)((k, _resolve(v, data)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v, data) for v in obj)
    return obj


def load(path: str) -> Any:
    """The object saved in the legacy-format file `path`, tensors as NumPy arrays.

    Raises UnsafeFileError for a file that is not in this format or needs any other global.
    """
    with open(path, "rb") as f:
        buffer = io.BytesIO(f.read())
    try:
        magic = _load(buffer)
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise UnsafeFileError(f"{path!r} is not a legacy torch file ({error})") from None
    if magic != MAGIC_NUMBER:
        raise UnsafeFileError(f"{path!r} is not a legacy torch file (magic number {magic!r})")
    protocol, sys_info = _load(buffer), _load(buffer)
    if protocol != PROTOCOL_VERSION:
        raise UnsafeFileError(f"{path!r}: unsupported legacy protocol {protocol!r}")
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise UnsafeFileError(f"{path!r} was written by a big-endian host; not supported")
    storages: dict[str, _StorageRef] = {}
    obj = _load(buffer, storages)
    keys = _load(buffer)
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages):
        raise UnsafeFileError(f"{path!r}: storage key list does not match the storages used")
    data: dict[str, np.ndarray] = {}
    for key in map(str, keys):
        ref = storages[key]
        count = np.frombuffer(buffer.read(8), "<i8")
        if count.size != 1 or int(count[0]) != ref.numel:
            raise UnsafeFileError(
                f"{path!r}: storage {key!r} record does not hold {ref.numel} elements"
            )
        raw = buffer.read(ref.numel * ref.dtype.itemsize)
        if len(raw) != ref.numel * ref.dtype.itemsize:
            raise UnsafeFileError(f"{path!r} is truncated in storage {key!r}")
        data[key] = np.frombuffer(raw, ref.dtype)
    return _resolve(obj, data)
