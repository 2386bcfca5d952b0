#!/usr/bin/python3
"""Re-scores a published version on the LightGCN split without retraining: a probe for
evaluation-time choices (how much history the user tower pools, a popularity term added to the
served inner product) before any of them becomes a trainer flag.

  /usr/bin/python3 bench/rescore_probe.py --version_dir=run/exp/preset/1 \
      --data=../shared/data/gowalla [--history=100,0] [--pop_weights=0,0.01,0.02]

Item vectors come from the version's FAISS index (reconstructed, so they are exactly what the
server searches); users are encoded by the version's TorchScript user tower with their id and
train items as history: the last N of the train line (the trainer's and server's eval-time
input) or, with N = 0, all of them. Scores are exact inner products over every item, train
items removed, Recall@20 / NDCG@20 averaged over users with a test item: the protocol of the
split's README (its popularity check reproduces: --popularity_check). With a popularity weight
w the score is <u, v_i> + w * log(1 + train count of i).
"""
import argparse
import json
import os

import faiss
import numpy as np
import torch


def read_split(path):
    lists = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts:
                lists[int(parts[0])] = [int(x) for x in parts[1:]]
    return lists


def ndcg_recall(top, test_sets, k):
    recall, ndcg = [], []
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    for row, truth in zip(top, test_sets):
        hits = np.fromiter((i in truth for i in row[:k]), dtype=bool, count=k)
        recall.append(hits.sum() / len(truth))
        ideal = disc[: min(len(truth), k)].sum()
        ndcg.append((hits * disc).sum() / ideal)
    return float(np.mean(recall)), float(np.mean(ndcg))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--version_dir", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--history", default="100,0", help="history lengths to try (0: all)")
    ap.add_argument("--pop_weights", default="0", help="popularity weights w to try")
    ap.add_argument("--history_item_weights", default="0",
                    help="weights g to try: the query becomes u + g * mean of the served vectors "
                         "of the user's pooled history items (an item-to-item term)")
    ap.add_argument("--popularity_check", action="store_true")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    train = read_split(os.path.join(args.data, "train.txt"))
    test = read_split(os.path.join(args.data, "test.txt"))
    num_items = 1 + max(max(v) for split in (train, test) for v in split.values() if v)
    counts = np.zeros(num_items)
    for items in train.values():
        counts[items] += 1
    users = sorted(u for u, t in test.items() if t)
    test_sets = [set(test[u]) for u in users]

    def rank(score_rows):
        """Top-k per user of score_rows(start, end) -> [end - start, items], train items
        removed, ties to the lower item id."""
        tops = []
        for s in range(0, len(users), 2048):
            sc = score_rows(s, min(s + 2048, len(users)))
            for r, u in enumerate(users[s: s + 2048]):
                sc[r, train.get(u, [])] = -np.inf
            tops.append(np.argsort(-sc, axis=1, kind="stable")[:, : args.k])
        return ndcg_recall(np.concatenate(tops), test_sets, args.k)

    if args.popularity_check:
        rec, ndcg = rank(lambda s, e: np.tile(counts, (e - s, 1)))
        print(json.dumps({"popularity": {f"recall@{args.k}": rec, f"ndcg@{args.k}": ndcg}}))
        return

    with open(os.path.join(args.version_dir, "MANIFEST.json")) as f:
        spec = json.load(f)["feature_spec"]
    # Gowalla's ids are the vocabulary: row = rank + 1 (0 = unknown), as model/encoder.cc.
    def vocab(id_spec):
        v = np.fromfile(os.path.join(args.version_dir, id_spec["vocab_file"]), dtype="<i8")
        return {int(x): r + 1 for r, x in enumerate(v)}
    user_rows, item_rows = vocab(spec["user_id"]), vocab(spec["item_id"])
    tower = torch.jit.load(os.path.join(args.version_dir, "user_tower.pt"))
    tower.eval()
    index = faiss.read_index(os.path.join(args.version_dir, "items.faiss"))
    id_map = faiss.downcast_index(index)
    inner = faiss.downcast_index(id_map.index)
    base = inner.storage if hasattr(inner, "storage") else inner
    base = faiss.downcast_index(base)
    vecs = base.reconstruct_n(0, base.ntotal)
    ids = faiss.vector_to_array(id_map.id_map)
    items = np.zeros((num_items, vecs.shape[1]), dtype=np.float32)
    items[ids] = vecs
    log_pop = np.log1p(counts).astype(np.float32)

    for hist_len in [int(x) for x in args.history.split(",")]:
        L = hist_len if hist_len > 0 else max(len(v) for v in train.values())
        emb = []
        for s in range(0, len(users), 1024):
            chunk = users[s: s + 1024]
            hist = torch.zeros((len(chunk), L), dtype=torch.int64)
            mask = torch.zeros((len(chunk), L), dtype=torch.float32)
            for r, u in enumerate(chunk):
                rows = [item_rows[i] for i in train.get(u, [])][-L:]
                hist[r, : len(rows)] = torch.tensor(rows, dtype=torch.int64)
                mask[r, : len(rows)] = 1.0
            uid = torch.tensor([user_rows[u] for u in chunk], dtype=torch.int64)
            empty_cat = torch.zeros((len(chunk), 0), dtype=torch.int64)
            empty_num = torch.zeros((len(chunk), 0), dtype=torch.float32)
            with torch.no_grad():
                emb.append(tower(uid, hist, mask, empty_cat, empty_num).numpy())
        emb = np.concatenate(emb)
        hist_mean = np.zeros_like(emb)
        for r, u in enumerate(users):
            h = train.get(u, [])[-L:]
            if h:
                hist_mean[r] = items[h].mean(axis=0)
        for g in [float(x) for x in args.history_item_weights.split(",")]:
            query = emb + g * hist_mean
            for w in [float(x) for x in args.pop_weights.split(",")]:
                rec, ndcg = rank(lambda s, e: query[s:e] @ items.T + w * log_pop)
                print(json.dumps({"history": hist_len, "history_item_weight": g, "pop_weight": w,
                                  f"recall@{args.k}": round(rec, 5),
                                  f"ndcg@{args.k}": round(ndcg, 5)}), flush=True)


if __name__ == "__main__":
    main()
