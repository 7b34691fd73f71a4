"""`rtml demo` runs its own Kafka and Redis: when their default ports are taken (say, by the user's `rtml up`
stack, whose credentials live in another state dir), it moves them to free ports instead of failing or
writing into that stack; ports the user set are kept."""

from __future__ import annotations

from rtml.commands import demo


def _clear(monkeypatch, tmp_path):
    for name in ("RTML_KAFKA_PORT", "RTML_KAFKA_CONTROLLER_PORT", "RTML_KAFKA_BOOTSTRAP", "RTML_REDIS_PORT",
                 "RTML_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path))


def test_taken_default_ports_move_to_free_ones(monkeypatch, tmp_path):
    import os

    import infra.proc

    _clear(monkeypatch, tmp_path)
    taken = {9092, 6379}
    real = infra.proc.port_open
    monkeypatch.setattr(infra.proc, "port_open", lambda host, port, timeout_s=1.0: port in taken or real(host, port))
    demo._own_ports()
    kafka, controller, redis = (int(os.environ[k]) for k in ("RTML_KAFKA_PORT", "RTML_KAFKA_CONTROLLER_PORT",
                                                              "RTML_REDIS_PORT"))
    assert controller == kafka + 1 and len({kafka, redis, 9092, 6379}) == 4
    assert not any(real("127.0.0.1", p) for p in (kafka, controller, redis))  # nothing listens there


def test_free_default_ports_and_ports_set_by_the_user_are_kept(monkeypatch, tmp_path):
    import os

    import infra.proc

    _clear(monkeypatch, tmp_path)
    monkeypatch.setattr(infra.proc, "port_open", lambda host, port, timeout_s=1.0: False)
    demo._own_ports()
    assert "RTML_KAFKA_PORT" not in os.environ and "RTML_REDIS_PORT" not in os.environ
    monkeypatch.setattr(infra.proc, "port_open", lambda host, port, timeout_s=1.0: True)
    monkeypatch.setenv("RTML_KAFKA_PORT", "29092")
    monkeypatch.setenv("RTML_REDIS_URL", "redis://127.0.0.1:7000/0")
    demo._own_ports()
    assert os.environ["RTML_KAFKA_PORT"] == "29092" and "RTML_REDIS_PORT" not in os.environ
