"""CIFAR-10's python archive, rebuilt byte-for-byte in its published format (only smaller).

Source: https://www.cs.toronto.edu/~kriz/cifar.html ("CIFAR-10 python version",
`cifar-10-python.tar.gz`, md5 c58f30108f718f92721af3b95e74349a). The archive is a gzip tar of

    cifar-10-batches-py/                 a directory member
    cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch
    cifar-10-batches-py/batches.meta
    cifar-10-batches-py/readme.html

Each batch is a dict pickled by Python 2's cPickle (protocol 2) with
    'batch_label'  str, e.g. 'training batch 1 of 5' / 'testing batch 1 of 1'
    'labels'       list of N ints in 0..9 (N = 10000 in the real file)
    'data'         numpy uint8 array N x 3072: 1024 red, then 1024 green, then 1024 blue values, each
                   plane a row-major 32x32 image
    'filenames'    list of N str (e.g. 'bufo_bufo_s_002123.png')
and batches.meta is {'num_cases_per_batch': 10000, 'label_names': [10 str], 'num_vis': 3072}.

Python 2's `str` pickles as SHORT_BINSTRING/BINSTRING, which Python 3's pickler cannot write, so the
pickles here are written opcode by opcode, as cPickle wrote them (memo puts, SETITEMS/APPENDS in
batches of 1000). A numpy array is `numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), 'b')`
then BUILD with `(1, shape, dtype, False, rawbytes)`, the dtype being `numpy.dtype('u1', 0, 1)` with
BUILD `(3, '|', None, None, None, -1, -1, 0)`. Loaded the way the CIFAR page's own loader does,
`pickle.load(f, encoding="bytes")`, keys and strings come back as bytes, exactly as from the real file.

    write_archive(path, per_batch=20)                     # a valid archive, 20 images per batch
    members = batches(per_batch=20); members["test_batch"]["labels"][0] = 10; write_archive(path, members=members)

Only the number of images per batch differs from the real file (a parameter, so tests stay fast); the
members are stored in a scrambled order (not 1..5) so that a loader must look them up by name.
"""

import io
import struct
import tarfile
from pathlib import Path

import numpy as np

FOLDER = "cifar-10-batches-py"
LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
ORDER = ["data_batch_4", "readme.html", "test_batch", "data_batch_3", "batches.meta", "data_batch_2",
         "data_batch_5", "data_batch_1"]
README = b"<meta HTTP-EQUIV=\"REFRESH\" content=\"0; url=http://www.cs.toronto.edu/~kriz/cifar.html\">\n"
BATCHSIZE = 1000  # cPickle's batch of SETITEMS / APPENDS


class Py2Pickler:
    """Writes protocol-2 pickles as Python 2's cPickle did: dict keys and text are py2 `str`."""

    def __init__(self):
        self.out = io.BytesIO()
        self.memo = 0

    def dumps(self, obj) -> bytes:
        self.out.write(b"\x80\x02")  # PROTO 2
        self.save(obj)
        self.out.write(b".")  # STOP
        return self.out.getvalue()

    def put(self):
        """Memoize the object just built (cPickle memoizes every container, string and global)."""
        n, self.memo = self.memo, self.memo + 1
        self.out.write(b"q" + bytes([n]) if n < 256 else b"r" + struct.pack("<I", n))  # BINPUT / LONG_BINPUT

    def save(self, obj):
        w = self.out.write
        if obj is None:
            w(b"N")
        elif obj is True or obj is False:
            w(b"\x88" if obj else b"\x89")  # NEWTRUE / NEWFALSE
        elif isinstance(obj, (int, np.integer)):
            self.save_int(int(obj))
        elif isinstance(obj, (str, bytes)):
            raw = obj.encode("latin-1") if isinstance(obj, str) else obj
            # py2 str: SHORT_BINSTRING under 256 bytes, else BINSTRING with a 4-byte length
            w(b"U" + bytes([len(raw)]) if len(raw) < 256 else b"T" + struct.pack("<i", len(raw)))
            w(raw)
            self.put()
        elif isinstance(obj, tuple):
            self.save_tuple(obj)
        elif isinstance(obj, list):
            w(b"]")  # EMPTY_LIST
            self.put()
            self.batched(obj, self.save, b"e")  # APPENDS
        elif isinstance(obj, dict):
            w(b"}")  # EMPTY_DICT
            self.put()
            self.batched(list(obj.items()), lambda kv: (self.save(kv[0]), self.save(kv[1])), b"u")  # SETITEMS
        elif isinstance(obj, np.ndarray):
            self.save_array(obj)
        else:
            raise TypeError(f"cannot pickle {type(obj).__name__} the Python 2 way")

    def save_int(self, n: int):
        if 0 <= n < 256:
            self.out.write(b"K" + bytes([n]))  # BININT1
        elif 0 <= n < 65536:
            self.out.write(b"M" + struct.pack("<H", n))  # BININT2
        else:
            self.out.write(b"J" + struct.pack("<i", n))  # BININT (signed 32 bits)

    def save_tuple(self, items: tuple):
        if not items:
            self.out.write(b")")  # EMPTY_TUPLE
            return
        if len(items) <= 3:
            for item in items:
                self.save(item)
            self.out.write(b"\x85\x86\x87"[len(items) - 1:len(items)])  # TUPLE1/2/3
        else:
            self.out.write(b"(")  # MARK
            for item in items:
                self.save(item)
            self.out.write(b"t")  # TUPLE
        self.put()

    def batched(self, items, save_one, opcode: bytes):
        for start in range(0, len(items), BATCHSIZE):
            self.out.write(b"(")  # MARK
            for item in items[start:start + BATCHSIZE]:
                save_one(item)
            self.out.write(opcode)

    def save_global(self, module: str, name: str):
        self.out.write(b"c" + f"{module}\n{name}\n".encode())  # GLOBAL
        self.put()

    def save_array(self, arr: np.ndarray):
        if arr.dtype != np.uint8:
            raise TypeError("only uint8 arrays are written (CIFAR-10 holds no others)")
        # ndarray.__reduce__ of numpy 1.x under Python 2
        self.save_global("numpy.core.multiarray", "_reconstruct")
        self.save_global("numpy", "ndarray")
        self.save_tuple((0,))
        self.save("b")
        self.out.write(b"\x87")  # TUPLE3: (ndarray, (0,), 'b')
        self.put()
        self.out.write(b"R")  # REDUCE
        self.put()
        self.out.write(b"(")  # MARK: the 5-tuple state
        self.save_int(1)
        self.save_tuple(arr.shape)
        self.save_dtype_u1()
        self.save(False)
        self.save(np.ascontiguousarray(arr).tobytes())
        self.out.write(b"t")  # TUPLE
        self.put()
        self.out.write(b"b")  # BUILD

    def save_dtype_u1(self):
        self.save_global("numpy", "dtype")
        self.save_tuple(("u1", 0, 1))
        self.out.write(b"R")  # REDUCE
        self.put()
        self.save_tuple((3, "|", None, None, None, -1, -1, 0))
        self.out.write(b"b")  # BUILD


def py2_pickle(obj) -> bytes:
    return Py2Pickler().dumps(obj)


def batches(per_batch: int = 20, seed: int = 0) -> dict:
    """The archive's members as Python objects (str keys; edit them to make a damaged archive).

    Labels cycle through all ten classes so that every class has per_batch // 10 or more images."""
    rng = np.random.RandomState(seed)
    members = {}
    for name in [*TRAIN, "test_batch"]:
        labels = [int(v) for v in rng.permutation(np.arange(per_batch) % 10)]
        label = f"training batch {name[-1]} of 5" if name in TRAIN else "testing batch 1 of 1"
        members[name] = {
            "data": rng.randint(0, 256, (per_batch, 3072)).astype(np.uint8),
            "labels": labels,
            "batch_label": label,
            "filenames": [f"{LABEL_NAMES[c]}_s_{rng.randint(10**6):06d}.png" for c in labels],
        }
    members["batches.meta"] = {"num_cases_per_batch": per_batch, "label_names": list(LABEL_NAMES), "num_vis": 3072}
    return members


def write_archive(path, per_batch: int = 20, seed: int = 0, members: dict | None = None) -> Path:
    """Write `cifar-10-python.tar.gz`'s layout to `path`; a member set to None is left out."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    members = batches(per_batch, seed) if members is None else members
    with tarfile.open(path, "w:gz") as tar:
        folder = tarfile.TarInfo(FOLDER)
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for name in ORDER:
            if name == "readme.html":
                raw = README
            elif members.get(name) is None:
                continue
            else:
                raw = py2_pickle(members[name])
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size, info.mode = len(raw), 0o644
            tar.addfile(info, io.BytesIO(raw))
    return path
