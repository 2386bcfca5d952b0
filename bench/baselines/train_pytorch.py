#!/usr/bin/python3
"""The PyTorch (Python) peer of recall-train, for the training-throughput benchmark.

Same model, batch, loss and thread count as `recall-train` with the same flags:
  user tower: [E_user[id] | masked mean of E_hist[history]] -> Linear -> L2 normalize
  item tower: E_item[id] -> Linear -> L2 normalize
  loss: InfoNCE over in-batch positives (+ a MoCo queue of momentum-encoder keys), logQ
  correction, accidental hits masked; Adam.
History = a uniform random subset (up to L) of the user's other train items, like the C++
trainer. Written the way a team would: vectorized torch ops, no custom kernels.

Prints one JSON line: {"examples_per_sec": ..., "steps": ..., "seconds": ...}.
Run with Debian's interpreter (/usr/bin/python3: python3-torch lives there).
"""
import argparse
import copy
import json
import os
import time

import numpy as np
import torch


def load_lightgcn(path):
    users, items = [], []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            u = int(parts[0])
            for i in parts[1:]:
                users.append(u)
                items.append(int(i))
    return np.array(users, dtype=np.int64), np.array(items, dtype=np.int64)


class UserTower(torch.nn.Module):
    def __init__(self, num_users, num_items, id_dim, dim):
        super().__init__()
        self.user_emb = torch.nn.Parameter(torch.randn(num_users + 1, id_dim) * 0.1)
        self.hist_emb = torch.nn.Parameter(torch.randn(num_items + 1, id_dim) * 0.1)
        self.proj = torch.nn.Linear(2 * id_dim, dim)

    def forward(self, user_id, history, mask):
        u = torch.nn.functional.embedding(user_id, self.user_emb)
        h = torch.nn.functional.embedding(history, self.hist_emb)
        pooled = (h * mask.unsqueeze(2)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        return torch.nn.functional.normalize(self.proj(torch.cat([u, pooled], 1)), dim=1)


class ItemTower(torch.nn.Module):
    def __init__(self, num_items, id_dim, dim):
        super().__init__()
        self.item_emb = torch.nn.Parameter(torch.randn(num_items + 1, id_dim) * 0.1)
        self.proj = torch.nn.Linear(id_dim, dim)

    def forward(self, item_id):
        return torch.nn.functional.normalize(
            self.proj(torch.nn.functional.embedding(item_id, self.item_emb)), dim=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="LightGCN split directory (train.txt)")
    ap.add_argument("--batch_size", type=int, default=2048)
    ap.add_argument("--history_length", type=int, default=50)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--queue_size", type=int, default=0)
    ap.add_argument("--momentum", type=float, default=0.99)
    ap.add_argument("--logq", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup_steps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    users, items = load_lightgcn(os.path.join(args.data, "train.txt"))
    num_users, num_items = int(users.max()) + 1, int(items.max()) + 1
    # Padded per-user train lists: [U, max_len], -1 = none.
    counts = np.bincount(users, minlength=num_users)
    max_len = int(counts.max())
    order = np.argsort(users, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos_in_user = np.arange(len(users)) - starts[users[order]]
    train = np.full((num_users, max_len), -1, dtype=np.int64)
    train[users[order], pos_in_user] = items[order]
    train = torch.from_numpy(train)
    pop = np.bincount(items, minlength=num_items).astype(np.float64)
    log_q = torch.from_numpy(np.log(np.maximum(pop, 1) / len(items))).float()

    user_tower = UserTower(num_users, num_items, args.dim, args.dim)
    item_tower = ItemTower(num_items, args.dim, args.dim)
    key_tower = copy.deepcopy(item_tower) if args.queue_size > 0 else None
    if key_tower is not None:
        for p in key_tower.parameters():
            p.requires_grad_(False)
        queue_keys = torch.zeros(args.queue_size, args.dim)
        queue_ids = torch.full((args.queue_size,), -1, dtype=torch.int64)
        head, filled = 0, 0
    opt = torch.optim.Adam(list(user_tower.parameters()) + list(item_tower.parameters()), lr=args.lr)

    b, L = args.batch_size, args.history_length
    perm = torch.from_numpy(rng.permutation(len(users)))
    users_t, items_t = torch.from_numpy(users), torch.from_numpy(items)
    start = None
    total = args.warmup_steps + args.steps
    for step in range(total):
        if step == args.warmup_steps:
            start = time.perf_counter()
        sel = perm[(step * b) % (len(users) - b):][:b]
        u, i = users_t[sel], items_t[sel]
        # History: a uniform random subset of the user's other train items (top-L of random keys).
        rows = train[u]
        valid = (rows >= 0) & (rows != i.unsqueeze(1))
        keys = torch.rand(rows.shape).masked_fill(~valid, -1.0)
        top = keys.topk(min(L, max_len), dim=1)
        hist = rows.gather(1, top.indices)
        mask = (top.values >= 0).float()
        hist = torch.where(mask > 0, hist + 1, torch.zeros_like(hist))  # row 0 = padding/OOV

        uv = user_tower(u + 1, hist, mask)
        iv = item_tower(i + 1)
        cols, col_ids = [iv], [i]
        if key_tower is not None and filled > 0:
            cols.append(queue_keys[:filled])
            col_ids.append(queue_ids[:filled])
        cand, ids = torch.cat(cols), torch.cat(col_ids)
        logits = uv @ cand.t() / args.temperature
        if args.logq:
            logits = logits - log_q[ids.clamp(min=0)].unsqueeze(0)
        hit = i.unsqueeze(1).eq(ids.unsqueeze(0))
        hit[:, :b].fill_diagonal_(False)
        logits = logits.masked_fill(hit, -1e9)
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(b))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if key_tower is not None:
            with torch.no_grad():
                k = key_tower(i + 1)
                n = k.shape[0]
                idx = (torch.arange(n) + head) % args.queue_size
                queue_keys[idx] = k
                queue_ids[idx] = i
                head = (head + n) % args.queue_size
                filled = min(args.queue_size, filled + n)
                for pk, pq in zip(key_tower.parameters(), item_tower.parameters()):
                    pk.mul_(args.momentum).add_(pq, alpha=1 - args.momentum)
    seconds = time.perf_counter() - start
    print(json.dumps({"examples_per_sec": args.steps * b / seconds, "steps": args.steps,
                      "seconds": seconds, "loss": float(loss)}))


if __name__ == "__main__":
    main()
