"""schemathesis against the OpenAPI document of a live `comfyfleet serve`, with every check.

Beyond "no 5xx", this holds the document to what the server does: every status, content type,
header and body an operation answers with must be documented (`gateway/_openapi.py` adds the
error answers), data the document calls invalid must be refused, and data it calls valid must be
accepted, with one exception below.

What is configured, and why:

- `positive_data_acceptance` also allows 400 and 422 on the routes whose acceptance depends on
  the running server rather than on the shape of the request: a graph is checked against the
  node classes the instances have loaded (`/object_info`) and its URLs against the network
  policy, and a model folder type against the configured folders (listing and deleting).
  No static document can list those; the request shape the document gives is still
  enforced by the other checks.
- Waits (`?wait=true`, `Prefer: wait=N`) are left in: the server under test caps them at
  `MAX_WAIT_S` seconds, so they cannot stall the run.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis.errors import Unsatisfiable

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the library's own import-time deprecations
    import schemathesis
    from schemathesis.config import SchemathesisConfig
    from schemathesis.generation import GenerationMode

from tests.fuzz.live import campaign_seed, live_server
from tests.integration.serve import Server

pytestmark = [pytest.mark.comfyui, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

SEED = campaign_seed()
EXAMPLES = int(os.environ.get("COMFYFLEET_FUZZ_EXAMPLES", "15"))
SEMANTIC_REFUSALS = ["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429"]
"""What a well-formed request may get on routes that check it against the running server."""


@pytest.fixture(scope="module")
def api(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    print(f"fuzz campaign seed: {SEED} (COMFYFLEET_FUZZ_SEED)")
    with live_server(comfyui_install, tmp_path_factory.mktemp("fuzz-openapi")) as server:
        yield server


def _semantic(method: str, path_regex: str) -> dict[str, Any]:
    return {
        "include-method": method,
        "include-path-regex": path_regex,
        "checks": {"positive_data_acceptance": {"expected-statuses": SEMANTIC_REFUSALS}},
    }


@pytest.fixture(scope="module")
def api_schema(api: Server) -> Any:
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "base-url": api.url,
            "request-timeout": 30,
            "generation": {"max-examples": EXAMPLES, "database": "none"},
            "operations": [
                _semantic("POST", r"^/v1/jobs(:validate)?$"),
                _semantic("GET", r"^/v1/models$"),
                _semantic("DELETE", r"^/v1/models/"),
            ],
        }
    )
    return schemathesis.openapi.from_url(api.url + "/openapi.json", config=config)


def _operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def test_the_api_answers_as_its_document_says(api_schema: Any) -> None:
    """Each operation, positive and negative data, every check; all failures reported at once.

    (The schema is loaded from the live server, so cases are generated here rather than with
    `schema.parametrize()`, whose lazy fixture loader does not run on this pytest.)"""
    failures: list[str] = []
    for operation in _operations(api_schema):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @seed(SEED)
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                case.call_and_validate()

            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label
                continue  # nothing in this operation can be made invalid (plain string paths)
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:3000])
    assert not failures, "\n\n".join(failures)
