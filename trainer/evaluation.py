"""End-of-trial (and periodic) evaluation.

- eval_loss: token-weighted mean loss over eval items that have an assistant turn;
- mc_accuracy: items with `choices`/`answer`; the choice with the highest summed log-likelihood
  as the assistant reply wins;
- exact_match: items with `reference`; greedy decoding from the prompt must equal it (stripped).
Accuracies are also broken down by the items' `domain` ("by_domain").
Every rank runs the same evaluation (so ZeRO-3's gathers stay in step); rank 0 reports it.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F

from .batching import DEFAULT_MICRO_BATCH_TOKENS, collate, micro_batches
from .data import IGNORE, ChatTokenizer, EvalItem, Sample


@torch.no_grad()
def per_sample_loss(engine, samples: list[Sample], pad_id: int, max_seq_len: int, device) -> list[tuple[float, int]]:
    """(summed token loss, loss tokens) for each sample, packed for speed; the packed attention keeps
    the samples apart (no mask)."""
    if not samples:
        return []
    lengths = {i: len(s) for i, s in enumerate(samples)}
    out: list[tuple[float, int]] = [(0.0, 0)] * len(samples)
    for rows in micro_batches(lengths, list(range(len(samples))), max_seq_len=max_seq_len,
                              micro_batch_tokens=DEFAULT_MICRO_BATCH_TOKENS, micro_batch_size=None):
        b = collate([[samples[i] for i in row] for row in rows], pad_id).to(device)
        logits = engine(input_ids=b.input_ids, position_ids=b.position_ids,
                        attention_mask=b.attention_mask, use_cache=False).logits.float()
        tok_loss = F.cross_entropy(logits.transpose(1, 2), b.targets, ignore_index=IGNORE, reduction="none")
        for r, row in enumerate(rows):
            pos = 0
            for i in row:
                k = len(samples[i])
                seg = slice(pos, pos + k)
                out[i] = (tok_loss[r, seg].sum().item(), int((b.targets[r, seg] != IGNORE).sum().item()))
                pos += k
    return out


@torch.no_grad()
def greedy_answers(model, chat: ChatTokenizer, prompts: list[list[dict]], max_new_tokens: int, device,
                   batch_size: int = 32) -> list[str]:
    tok = chat.tok
    answers = []
    for start in range(0, len(prompts), batch_size):
        ids = [chat.prompt_ids(p) for p in prompts[start:start + batch_size]]
        L = max(len(x) for x in ids)
        inp = torch.full((len(ids), L), tok.pad_token_id, dtype=torch.long)
        att = torch.zeros((len(ids), L), dtype=torch.long)
        for r, x in enumerate(ids):  # left padding for generation
            inp[r, L - len(x):] = torch.tensor(x)
            att[r, L - len(x):] = 1
        gen = model.generate(input_ids=inp.to(device), attention_mask=att.to(device), do_sample=False,
                             max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)
        for row in gen[:, L:]:
            answers.append(tok.decode(row, skip_special_tokens=True).strip())
    return answers


def evaluate(engine, chat: ChatTokenizer, items: list[EvalItem], cfg, device) -> dict:
    if not items:
        return {}
    items = items[: cfg.eval.max_items] if cfg.eval.max_items else items
    was_training = engine.training
    engine.eval()
    pad, max_len = chat.tok.pad_token_id, cfg.data.max_seq_len
    result: dict = {}
    by_domain: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))

    loss_items = [it for it in items if it.choices is None and any(m["role"] == "assistant" for m in it.messages)]
    if loss_items:
        samples = [Sample(*chat.encode(it.messages), it.source) for it in loss_items]
        sums = per_sample_loss(engine, samples, pad, max_len, device)
        result["eval_loss"] = sum(s for s, _ in sums) / max(1, sum(n for _, n in sums))

    mc_items = [it for it in items if it.choices is not None]
    if mc_items:
        samples, owner = [], []
        for k, it in enumerate(mc_items):
            prompt = [m for m in it.messages if m["role"] != "assistant"]
            for choice in it.choices:
                samples.append(Sample(*chat.encode(prompt + [{"role": "assistant", "content": choice}]), it.source))
                owner.append(k)
        sums = per_sample_loss(engine, samples, pad, max_len, device)
        best: dict[int, tuple[float, int]] = {}
        seen: dict[int, int] = defaultdict(int)
        for (s, _), k in zip(sums, owner):
            j = seen[k]
            seen[k] += 1
            if k not in best or s < best[k][0]:  # lowest summed loss = highest log-likelihood
                best[k] = (s, j)
        hits = [int(best[k][1] == it.answer) for k, it in enumerate(mc_items)]
        result["mc_accuracy"] = sum(hits) / len(hits)
        for it, h in zip(mc_items, hits):
            by_domain[it.domain]["mc_accuracy"].append(h)

    em_items = [it for it in items if it.reference is not None and it.choices is None]
    if em_items:
        prompts = [[m for m in it.messages[: _prompt_end(it.messages)]] for it in em_items]
        answers = greedy_answers(engine.module, chat, prompts, cfg.eval.max_new_tokens, device)
        hits = [int(a == it.reference.strip()) for a, it in zip(answers, em_items)]
        result["exact_match"] = sum(hits) / len(hits)
        for it, h in zip(em_items, hits):
            by_domain[it.domain]["exact_match"].append(h)

    if by_domain:
        result["by_domain"] = {d: {k: sum(v) / len(v) for k, v in ms.items()} for d, ms in sorted(by_domain.items())}
    if was_training:
        engine.train()
    return result


def _prompt_end(messages: list[dict]) -> int:
    """Index just past the last non-assistant message (the prompt for generation)."""
    end = len(messages)
    while end > 0 and messages[end - 1]["role"] == "assistant":
        end -= 1
    return end
