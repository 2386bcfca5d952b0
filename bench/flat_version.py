#!/usr/bin/python3
"""Copies a published version directory with its index rebuilt as exact search ("Flat"): the
same item ids and vectors, the same towers, a manifest naming the new factory and checksums.
bench/batching.sh uses it to measure batching on a brute-force index beside HNSW.

usage: bench/flat_version.py SRC_VERSION_DIR DST_VERSION_DIR
"""
import hashlib
import json
import os
import shutil
import sys

import faiss


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    src, dst = sys.argv[1], sys.argv[2]
    os.makedirs(dst, exist_ok=True)
    top = faiss.read_index(os.path.join(src, "items.faiss"))
    ids = faiss.vector_to_array(top.id_map)  # IndexIDMap2: label -> external id, -1 = hidden
    inner = faiss.downcast_index(top.index)
    if isinstance(inner, faiss.IndexRefine):  # ",RFlat": the exact copies
        storage = faiss.downcast_index(inner.refine_index)
    elif hasattr(inner, "storage"):  # HNSW
        storage = faiss.downcast_index(inner.storage)
    else:
        storage = inner
    if hasattr(storage, "get_xb"):
        vectors = faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * storage.d)
        vectors = vectors.reshape(storage.ntotal, storage.d)
    else:  # IVF lists: reconstruct through a direct map
        faiss.extract_index_ivf(storage).make_direct_map()
        vectors = storage.reconstruct_n(0, storage.ntotal)
    live = ids >= 0
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(storage.d))
    flat.add_with_ids(vectors[live].copy(), ids[live].copy())
    faiss.write_index(flat, os.path.join(dst, "items.faiss"))
    with open(os.path.join(src, "MANIFEST.json")) as f:
        manifest = json.load(f)
    manifest["index_factory"] = "Flat"
    manifest.pop("index_search_params", None)  # Flat has none
    manifest.pop("index_tuning", None)
    for entry in manifest["files"]:
        if entry["path"] != "items.faiss":
            shutil.copyfile(os.path.join(src, entry["path"]), os.path.join(dst, entry["path"]))
        path = os.path.join(dst, entry["path"])
        entry["sha256"] = sha256(path)
        entry["size_bytes"] = str(os.path.getsize(path))
    with open(os.path.join(dst, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
