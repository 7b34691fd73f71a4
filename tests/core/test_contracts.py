"""Topic contracts come from the feature repo's declarations, not from a second hand-written list."""

from datetime import timedelta

import pytest
from feast import KafkaSource
from feast.data_format import JsonFormat

from core.contracts import TRANSACTION_FIELDS, ddl_fields, source_rules, stream_rules
from core.errors import UserFacingError


def _source(ddl: str, tags: dict[str, str] | None = None, ts: str = "event_timestamp") -> KafkaSource:
    return KafkaSource(
        name="s", timestamp_field=ts, kafka_bootstrap_servers="127.0.0.1:1", topic="t",
        message_format=JsonFormat(schema_json=ddl), watermark_delay_threshold=timedelta(minutes=1), tags=tags or {},
    )


def test_transaction_fields_are_the_kafka_source_schema():
    from core.feature_repo import import_definitions

    ddl = import_definitions("sources").transactions_stream.kafka_options.message_format.schema_json
    names = [part.split()[0] for part in ddl.split(",")]
    assert list(TRANSACTION_FIELDS) == names
    assert TRANSACTION_FIELDS["user_id"] is int and TRANSACTION_FIELDS["amount"] is float
    assert TRANSACTION_FIELDS["event_timestamp"] is str  # timestamps travel as ISO-8601 text


def test_reference_repo_declares_its_validation_rules_on_the_source():
    rules = stream_rules()
    assert rules.ranges == {"amount": (0.0, 1_000_000.0)}
    assert rules.future_tolerance_s == 300.0
    assert rules.timestamp_field == "event_timestamp"
    assert rules.of_type(int) == ("user_id", "merchant_id")


def test_range_tags_parse_open_bounds():
    rules = source_rules(_source("id string, v double, n bigint, event_timestamp timestamp",
                                 {"rtml.range.v": "..5", "rtml.range.n": "-3..", "rtml.future_tolerance_s": "60"}))
    assert rules.ranges == {"v": (None, 5.0), "n": (-3.0, None)}
    assert rules.future_tolerance_s == 60.0


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"rtml.range.id": "0..1"}, "names no numeric field"),
        ({"rtml.range.v": "0-1"}, "must look like 'lo..hi'"),
        ({"rtml.range.v": "a..1"}, "is not a number"),
    ],
)
def test_bad_rule_tags_are_refused_with_the_tag_named(tags, message):
    with pytest.raises(UserFacingError, match=message):
        source_rules(_source("id string, v double, event_timestamp timestamp", tags))


def test_unsupported_ddl_type_is_named():
    with pytest.raises(UserFacingError, match="map<string,int>"):
        ddl_fields("id string, m map<string,int>")


def test_timestamp_field_must_be_in_the_schema():
    with pytest.raises(UserFacingError, match="timestamp field 'ts'"):
        source_rules(_source("id string", ts="ts"))


def test_label_fields_come_from_the_label_view_and_the_service():
    from core.contracts import LABEL_FIELDS
    from core.feature_refs import label_definition

    labels = label_definition()
    assert (labels.name, labels.event_key, labels.label, labels.label_timestamp_field, labels.topic) == (
        "fraud_labels", "transaction_id", "is_fraud", "label_timestamp", "labels")
    assert labels.path.endswith("labels.parquet")
    assert LABEL_FIELDS == {"transaction_id": str, "user_id": int, "merchant_id": int, "event_timestamp": str,
                            "label_timestamp": str, "is_fraud": int}
