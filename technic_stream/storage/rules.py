"""The alert rules' hot operations, batched across callers (see :mod:`.batch`).

The gateway reads a rule by id, lists an owner's rules and replaces a rule on every
rule request; under load many of each are asked for at once, and :class:`RuleStore`
answers each kind with one command per batch: ids in one ``find`` (``$in``), owners in
one ``find``, replaces in one unordered ``bulk_write``.
"""

from __future__ import annotations

from typing import Any

from pymongo import ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, WriteError

from technic_stream.storage.batch import Batcher

__all__ = ["RuleStore"]

Doc = dict[str, Any]


class RuleStore:
    """``get(rule_id)`` → the rule's document or None; ``of_owner(owner)`` → the
    owner's rules by id; ``replace(doc)`` → True if it replaced the owner's rule of that
    id, False if it inserted it, ``DuplicateKeyError`` if the id is another owner's.

    Each caller gets its own document (a shallow copy), so one may change what it got.
    """

    def __init__(self, collection: AsyncCollection[Any], *, max_batch: int = 256) -> None:
        self.collection = collection
        self.get: Batcher[str, Doc | None] = Batcher(
            self._by_ids, name="rule_get", max_batch=max_batch
        )
        self.of_owner: Batcher[str, list[Doc]] = Batcher(
            self._by_owners, name="rule_list", max_batch=max_batch
        )
        self.replace: Batcher[Doc, bool] = Batcher(
            self._replace, name="rule_replace", max_batch=max_batch
        )

    async def _by_ids(self, ids: list[str]) -> list[Doc | None]:
        unique = list(dict.fromkeys(ids))
        query = {"_id": unique[0]} if len(unique) == 1 else {"_id": {"$in": unique}}
        found = {d["_id"]: d async for d in self.collection.find(query)}
        return [dict(found[i]) if i in found else None for i in ids]

    async def _by_owners(self, owners: list[str]) -> list[list[Doc]]:
        unique = list(dict.fromkeys(owners))
        if len(unique) == 1:
            cursor = self.collection.find({"owner": unique[0]}).sort("_id", 1)
        else:
            cursor = self.collection.find({"owner": {"$in": unique}}).sort(
                [("owner", 1), ("_id", 1)]
            )
        rules: dict[str, list[Doc]] = {o: [] for o in unique}
        async for d in cursor:
            rules[d["owner"]].append(d)
        return [[dict(d) for d in rules[o]] for o in owners]

    async def _replace(self, docs: list[Doc]) -> list[bool | Exception]:
        # one id twice in a batch goes in a later round: an unordered bulk write keeps
        # no order between its writes, and the later call must win as it would alone
        answers: list[bool | Exception] = [False] * len(docs)
        todo = list(range(len(docs)))
        while todo:
            seen: set[Any] = set()
            now: list[int] = []
            later: list[int] = []
            for i in todo:
                (later if docs[i]["_id"] in seen else now).append(i)
                seen.add(docs[i]["_id"])
            done = await self._replace_round([docs[i] for i in now])
            for i, answer in zip(now, done, strict=True):
                answers[i] = answer
            todo = later
        return answers

    async def _replace_round(self, docs: list[Doc]) -> list[bool | Exception]:
        ops = [ReplaceOne({"_id": d["_id"], "owner": d["owner"]}, d, upsert=True) for d in docs]
        try:
            done = await self.collection.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            details = exc.details
            if details.get("writeConcernErrors"):
                raise
            upserted = {u["index"] for u in details.get("upserted", [])}
            failed: dict[int, Exception] = {}
            for err in details.get("writeErrors", []):
                code, msg = err.get("code"), err.get("errmsg", "")
                failed[err["index"]] = (DuplicateKeyError if code == 11000 else WriteError)(
                    msg, code, err
                )
            return [failed.get(i, i not in upserted) for i in range(len(docs))]
        upserted_ids = done.upserted_ids or {}
        return [i not in upserted_ids for i in range(len(docs))]
