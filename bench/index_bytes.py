#!/usr/bin/python3
"""Prints the bytes of an HNSW index's raw vectors and of its graph (neighbor lists, per-node
offsets and levels): the denominator of issue 5's memory target.

usage: bench/index_bytes.py ITEMS_FAISS  ->  "<vector bytes> <graph bytes>"
"""
import sys

import faiss


def main():
    top = faiss.read_index(sys.argv[1])
    inner = faiss.downcast_index(top.index) if hasattr(top, "id_map") else top
    storage = faiss.downcast_index(inner.storage)
    g = inner.hnsw
    vectors = storage.ntotal * storage.d * 4
    graph = g.neighbors.size() * 4 + g.offsets.size() * 8 + g.levels.size() * 4
    print(vectors, graph)


if __name__ == "__main__":
    main()
