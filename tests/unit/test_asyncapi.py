import json

from m3bridge import docs
from shared.contracts import asyncapi
from shared.contracts.topics import ALL_TOPICS


def test_generated_documents_are_current() -> None:
    assert docs.stale() == [], "run `make docs` and commit the result"


def test_asyncapi_describes_every_topic_with_its_payload() -> None:
    document = json.loads(asyncapi.build())
    assert set(document["channels"]) == {topic.name for topic in ALL_TOPICS}
    schemas = document["components"]["schemas"]
    for topic in ALL_TOPICS:
        assert topic.payload.__name__ in schemas
    assert "DocNo" in schemas["QuoteApproved"]["properties"]


def test_readme_lists_every_setting() -> None:
    readme = docs.with_settings(docs.SETTINGS.read_text())
    for name in ("M3B_KAFKA_BOOTSTRAP_SERVERS", "M3B_STATE_URL", "M3B_KAFKA_SASL_PASSWORD", "M3B_LOG_FORMAT"):
        assert f"`{name}`" in readme
