"""Powertools' ``Tracer``, without the X-Ray SDK when tracing is off.

``Tracer()`` always builds the X-Ray recorder (``aws_xray_sdk.core``) as its provider, even
when it is disabled: ~10 ms of a Lambda cold start, and ~100 ms elsewhere (outside Lambda
the recorder's sampler creates two botocore X-Ray clients). With tracing off, a provider
that records nothing takes its place; the decorators stay the same. With tracing on
(``Tracing: Active``, the template's default) it is Powertools' own X-Ray provider.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from aws_lambda_powertools import Tracer
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment


def tracing_enabled() -> bool:
    """Powertools' own rule: off with POWERTOOLS_TRACE_DISABLED, outside Lambda, and under
    SAM local or Chalice."""
    # A private static method, pinned by tests/unit/test_cold_start.py: Powertools keeps the
    # one description of when tracing is off.
    return not Tracer._is_tracer_disabled()


def make_tracer(service: str) -> Tracer:
    if tracing_enabled():
        return Tracer(service=service)
    return Tracer(service=service, disabled=True, provider=NoTracing())


class _NoSegment(BaseSegment):
    """What the decorators annotate when nothing is traced."""

    def close(self, end_time: int | None = None) -> None:
        pass

    def add_subsegment(self, subsegment: Any) -> None:
        pass

    def remove_subsegment(self, subsegment: Any) -> None:
        pass

    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass

    def add_exception(self, exception: BaseException, stack: Any, remote: bool = False) -> None:
        pass


class NoTracing(BaseProvider):
    """A tracing provider that records nothing (and imports nothing)."""

    @contextmanager
    def in_subsegment(self, name: Any = None, **kwargs: Any) -> Generator[BaseSegment, None, None]:
        yield _NoSegment()

    @asynccontextmanager
    async def in_subsegment_async(
        self, name: Any = None, **kwargs: Any
    ) -> AsyncGenerator[BaseSegment, None]:
        yield _NoSegment()

    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass

    def patch(self, modules: Sequence[str]) -> None:
        pass

    def patch_all(self) -> None:
        pass
