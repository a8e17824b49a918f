"""Great Expectations 1.x glue: suites from the project's JSON, real checkpoints on DataFrames, Data Docs.

The suites live as readable JSON in ``expectations/`` (``{"name", "expectations":
[{"type", "kwargs", "meta"}]}``, the layout GX writes). Each validation runs a
real ``Checkpoint`` (with an ``UpdateDataDocsAction``) in an ephemeral context,
so nothing is written outside the output folder given by the caller.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from legato.config import read_document
from legato.errors import ConfigError


@dataclass
class ExpectationOutcome:
    """One expectation's result in plain Python types."""

    suite: str
    type: str
    column: str | None
    success: bool
    observed: object
    expected: dict
    guards: str = ""


@dataclass
class SuiteOutcome:
    """A suite's results on one table."""

    suite: str
    success: bool
    expectations: list[ExpectationOutcome] = field(default_factory=list)

    @property
    def failures(self) -> list[ExpectationOutcome]:
        """The expectations that failed."""
        return [e for e in self.expectations if not e.success]


def load_suite(path: str | Path) -> dict:
    """A suite JSON file as a dict, or a one-line error."""
    suite = read_document(path, "expectation suite", "json")
    if not isinstance(suite, dict) or "name" not in suite or not isinstance(suite.get("expectations"), list):
        raise ConfigError(f"expectation suite {path} needs 'name' and a list of 'expectations'")
    return suite


def _plain(value):
    """numpy scalars / arrays in GX results as JSON-friendly Python values."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def _observed(result: dict):
    """The observed value of a result, or the share of rows that broke a per-row expectation."""
    if "observed_value" in result:
        return _plain(result["observed_value"])
    if result.get("unexpected_percent") is not None:
        return f"{float(result['unexpected_percent']):.1f}% of rows"
    return None


class Validator:
    """An ephemeral GX context validating DataFrames against the project's suites."""

    def __init__(self):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx

        self._gx = gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.source = self.context.data_sources.add_pandas("legato")

    def run(self, frame, suite: dict, parameters: dict | None = None) -> SuiteOutcome:
        """Validate ``frame`` with ``suite`` through a real checkpoint (Data Docs updated)."""
        from great_expectations.expectations.registry import get_expectation_impl

        gx = self._gx
        name = suite["name"]
        gx_suite = gx.ExpectationSuite(name=name)
        for item in suite["expectations"]:
            try:
                expectation = get_expectation_impl(item["type"])(**item["kwargs"], meta=item.get("meta"))
            except Exception as exc:  # noqa: BLE001 - a bad suite entry is a configuration error
                raise ConfigError(f"suite {name!r}: bad expectation {item.get('type')!r}: {str(exc).splitlines()[0]}") from None
            gx_suite.add_expectation(expectation)
        gx_suite = self.context.suites.add(gx_suite)
        asset = self.source.add_dataframe_asset(name)
        batch = asset.add_batch_definition_whole_dataframe(f"{name}-batch")
        definition = self.context.validation_definitions.add(gx.ValidationDefinition(name=f"{name}-validation", data=batch, suite=gx_suite))
        checkpoint = self.context.checkpoints.add(
            gx.Checkpoint(
                name=f"{name}-checkpoint",
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data-docs")],
                result_format="SUMMARY",
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": frame}, expectation_parameters=parameters or {})
        outcomes = []
        for validation in result.run_results.values():
            for item in validation.results:
                config = item.expectation_config
                kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "column", "partition_object")}
                outcomes.append(
                    ExpectationOutcome(
                        suite=name,
                        type=config.type,
                        column=config.kwargs.get("column"),
                        success=bool(item.success),
                        observed=_observed(item.result),
                        expected=_plain(kwargs),
                        guards=(config.meta or {}).get("guards", ""),
                    )
                )
        return SuiteOutcome(suite=name, success=bool(result.success), expectations=outcomes)

    def save_docs(self, folder: str | Path) -> Path | None:
        """Copy the Data Docs site (HTML) into ``folder``; its index.html, or None."""
        for site in self.context.get_docs_sites_urls():
            url = site.get("site_url") or ""
            if url.startswith("file://"):
                source = Path(url[len("file://") :]).parent
                folder = Path(folder)
                if folder.exists():
                    shutil.rmtree(folder)
                shutil.copytree(source, folder)
                return folder / "index.html"
        return None
