"""The plan of a distributed run: each load host's ``Share`` of the producers and consumers
(``plan_shares``), and what each host's consumers add to a latency to correct the clock offsets
between the hosts (``latency_shifts``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from queues.errors import InvalidSpec
from queues.workload.spec import WorkloadSpec


@dataclass(frozen=True)
class Share:
    """What one host runs: producer and consumer indices of the run."""

    host: str
    producers: tuple[int, ...] = ()
    consumers: tuple[int, ...] = ()


def plan_shares(spec: WorkloadSpec, placement: Mapping[str, Any]) -> dict[str, Share]:
    """Each host's share for ``placement`` (``{"producers": {"A": 2}, "consumers": {"B": 1,
    "C": 1}}``): indices handed out in the order the hosts are named. Raises ``InvalidSpec``
    when the counts do not add up to the spec's, or a count is not a whole number."""
    if not isinstance(placement, Mapping) or set(placement) - {"producers", "consumers"}:
        raise InvalidSpec(
            f'placement must be {{"producers": {{HOST: N}}, "consumers": {{HOST: N}}}}, got {placement!r}',
            field="placement",
        )
    if spec.faults:
        raise InvalidSpec("a run placed on load hosts takes no faults (not supported yet)", field="placement")
    shares: dict[str, dict[str, list[int]]] = {}
    for role, wanted in (("producers", spec.producers), ("consumers", spec.consumers)):
        counts = placement.get(role) or {}
        if not isinstance(counts, Mapping) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts.values()
        ):
            raise InvalidSpec(
                f"placement's {role} must map host names to whole numbers, got {counts!r}", field="placement"
            )
        if sum(counts.values()) != wanted:
            raise InvalidSpec(
                f"placement puts {sum(counts.values())} {role} on hosts, the spec has {wanted}", field="placement"
            )
        index = 0
        for host, n in counts.items():
            share = shares.setdefault(str(host), {"producers": [], "consumers": []})
            share[role] += range(index, index + n)
            index += n
    return {
        h: Share(h, tuple(s["producers"]), tuple(s["consumers"]))
        for h, s in shares.items()
        if s["producers"] or s["consumers"]
    }


def latency_shifts(shares: Mapping[str, Share], offsets_s: Mapping[str, float], producers: int) -> dict[str, list[int]]:
    """For each host, what its consumers add to an event's measured latency, by producer
    index: ``offset(consumer's host) - offset(producer's host)`` in ns."""
    host_of = {p: s.host for s in shares.values() for p in s.producers}
    return {
        host: [round((offsets_s[host] - offsets_s[host_of[p]]) * 1e9) if p in host_of else 0 for p in range(producers)]
        for host in shares
    }
