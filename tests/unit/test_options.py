"""Backend options: one declaration per option, one validation path (queues/backends/options.py)."""

from __future__ import annotations

import pytest

from queues.backends import BACKENDS, backend_class
from queues.backends.memory import MultiprocessBackend
from queues.backends.options import Option, options_resolve
from queues.errors import InvalidSpec, UnknownBackend
from queues.run.launch import build_backend, resolve_options

DECLARED = (
    Option("prefetch", int, 1000, "messages held", minimum=1, maximum=65_535, unit="messages"),
    Option("poll_s", float, 0.05, "wait", minimum=0.001, maximum=60, unit="s"),
    Option("mode", str, "copy", "how", choices=("copy", "unnest")),
    Option("ack", bool, True, "acks"),
)


def resolve(**given):
    return options_resolve(DECLARED, given, owner="demo")


def test_defaults_fill_every_option_not_given():
    assert resolve() == {"prefetch": 1000, "poll_s": 0.05, "mode": "copy", "ack": True}
    assert resolve(prefetch="500") == {"prefetch": 500, "poll_s": 0.05, "mode": "copy", "ack": True}


def test_strings_from_the_command_line_and_json_values_give_the_same_result():
    from_cli = resolve(prefetch="2_000", poll_s="1e-2", mode=" unnest ", ack="off")
    from_json = resolve(prefetch=2000, poll_s=0.01, mode="unnest", ack=False)
    assert from_cli == from_json == {"prefetch": 2000, "poll_s": 0.01, "mode": "unnest", "ack": False}
    assert isinstance(resolve(poll_s=1)["poll_s"], float) and isinstance(resolve(prefetch=7.0)["prefetch"], int)


@pytest.mark.parametrize(
    "text,value",
    [
        ("true", True),
        ("YES", True),
        ("on", True),
        ("1", True),
        ("false", False),
        ("No", False),
        ("off", False),
        ("0", False),
    ],
)
def test_bool_parsing(text, value):
    assert resolve(ack=text)["ack"] is value


def test_an_unknown_name_gets_a_hint_and_the_known_names():
    with pytest.raises(InvalidSpec) as caught:
        resolve(prefetsh=3)
    message = str(caught.value)
    assert "demo has no option 'prefetsh' (did you mean 'prefetch'?)" in message
    assert "its options: ack, mode, poll_s, prefetch" in message
    assert caught.value.field == "options"


def test_an_unknown_name_on_a_backend_without_options_says_so():
    with pytest.raises(InvalidSpec, match="bare has no option 'prefetch'; it takes no options"):
        options_resolve((), {"prefetch": 10}, owner="bare")
    with pytest.raises(InvalidSpec, match="memory has no option 'prefetch'; its options: max_backlog_mb"):
        build_backend("memory", options={"prefetch": 10})


@pytest.mark.parametrize(
    "given,expected",
    [
        ({"prefetch": "lots"}, "option prefetch must be a whole number from 1 to 65535 messages, got 'lots'"),
        ({"prefetch": 2.5}, "option prefetch must be a whole number from 1 to 65535 messages, got 2.5"),
        ({"prefetch": True}, "option prefetch must be a whole number"),
        ({"poll_s": "soon"}, "option poll_s must be a number from 0.001 to 60 s, got 'soon'"),
        ({"poll_s": "nan"}, "option poll_s must be a number from 0.001 to 60 s"),
        ({"ack": "maybe"}, "option ack must be true or false, got 'maybe'"),
        ({"ack": 2}, "option ack must be true or false, got 2"),
        ({"mode": 3}, "option mode must be one of copy, unnest, got 3"),
    ],
)
def test_a_value_of_the_wrong_type_says_what_is_allowed(given, expected):
    with pytest.raises(InvalidSpec, match="^demo: ") as caught:
        resolve(**given)
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    "given,expected",
    [
        ({"prefetch": 0}, "from 1 to 65535 messages, got 0"),
        ({"prefetch": "65536"}, "from 1 to 65535 messages, got '65536'"),
        ({"poll_s": 0}, "from 0.001 to 60 s, got 0"),
        ({"poll_s": -1.0}, "from 0.001 to 60 s, got -1.0"),
    ],
)
def test_a_value_out_of_range_names_the_range_and_unit(given, expected):
    with pytest.raises(InvalidSpec, match=expected):
        resolve(**given)


def test_a_value_not_among_the_choices_lists_them():
    with pytest.raises(InvalidSpec, match="option mode must be one of copy, unnest, got 'executemany'"):
        resolve(mode="executemany")


def test_a_declaration_whose_default_is_not_allowed_fails_at_import():
    with pytest.raises(InvalidSpec):
        Option("prefetch", int, 0, "held", minimum=1)
    with pytest.raises(TypeError):
        Option("when", list, [], "no such type")


@pytest.mark.parametrize("alias", sorted(BACKENDS))
def test_every_backend_validates_in_its_constructor_with_no_io(alias):
    cls = backend_class(alias)
    backend = cls(url="unreachable://nowhere")  # no I/O: a URL nothing answers is fine
    assert backend.option_values == {o.name: o.default for o in cls.options}
    assert len({o.name for o in cls.options}) == len(cls.options)  # no name declared twice
    with pytest.raises(InvalidSpec, match=f"{alias} has no option 'no_such_knob'"):
        cls(url="unreachable://nowhere", no_such_knob=3)


def test_memory_mp_rejects_a_bad_simulation_option_in_the_runners_process():
    with pytest.raises(InvalidSpec, match="memory-mp: option max_depth must be a whole number of at least 0"):
        MultiprocessBackend(max_depth="abc")
    backend = MultiprocessBackend(consume_cost_us="500", stall_after="1000", stall_s="1", max_depth="100")
    assert (backend.consume_cost_us, backend.stall_after, backend.stall_s, backend.max_depth) == (500.0, 1000, 1.0, 100)


def test_a_subclass_extends_or_changes_its_parents_options():
    notify, plain = backend_class("postgres-notify"), backend_class("postgres")
    assert [o.name for o in notify.options] == [o.name for o in plain.options] + ["fallback_poll_s"]
    noack = build_backend("redis-list-noack")
    assert noack.option_values["ack"] is False and noack.capabilities.acks is False
    assert build_backend("redis-list", options={"ack": "false"}).capabilities.acks is False


def test_approaches_take_no_options():
    assert resolve_options("loop") == {}
    with pytest.raises(InvalidSpec, match="the loop approach takes no options \\(got prefetch\\)"):
        resolve_options("loop", {"prefetch": "1"})
    with pytest.raises(UnknownBackend):
        resolve_options("nope", {})
