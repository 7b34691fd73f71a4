"""kafka-python's record-batch checksum runs in C (the pure-Python fallback costs ~0.2 ms of GIL per KB:
the prediction log's sender thread spent more on it than a request costs)."""

import crc32c
from kafka.record import util
from kafka.record._crc32c import crc as crc32c_python


def test_record_batches_use_the_c_crc32c_and_it_agrees_with_kafka_pythons_own():
    assert util.calc_crc32c.__defaults__[0] is crc32c.crc32c
    data = bytes(range(256)) * 7 + b"rtml"
    assert util.calc_crc32c(data) == crc32c_python(data) == crc32c.crc32c(data)
