"""Counting JAX's own compile-pipeline events, for tests that a program is traced and compiled once across calls."""

import jax.monitoring


class CompileEvents:
    """Every trace of a jitted function and every backend compile (event, function name) while active:
    `with CompileEvents() as compiles: ...`. A compilation-cache hit still traces, so traces count compiles."""

    def __init__(self):
        self.events = []

    def __call__(self, event, duration, **kwargs):
        if event.startswith("/jax/core/compile/"):
            self.events.append((event.rsplit("/", 1)[-1], kwargs.get("fun_name", "")))

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self)

    def traces(self, name: str = "") -> list[str]:
        """Names of the functions traced (those containing `name`)."""
        return [fun for event, fun in self.events if event == "jaxpr_trace_duration" and name in fun]
