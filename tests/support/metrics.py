"""Reading a server's Prometheus metrics over HTTP, as a scraper does."""
from __future__ import annotations

from typing import Any, Dict, Tuple

import requests
from prometheus_client.parser import text_string_to_metric_families

Samples = Dict[Tuple[Any, ...], float]


def scrape(server: Any, token: str) -> Samples:
    """``{(name, labels...): value}`` of every sample at ``server``'s ``/metrics``."""
    reply = requests.get(server.url + "/metrics", timeout=5,
                         headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 200 and reply.headers["Content-Type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            samples[(sample.name, *sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample of a scrape (0 when absent)."""
    return samples.get((name, *sorted(labels.items())), 0.0)
