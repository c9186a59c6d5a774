"""The agency API answers each error by its type, never by the wording of its message (issue 11)."""

from __future__ import annotations

import pytest

from adapters.http.client import ApiFailure
from adapters.http.reading import ApiError
from bus.auth import AuthError
from bus.errors import BusError, UnsafeXmlError, XmlTooLargeError
from bus.xmlparse import XmlLimits, parse_untrusted


def test_an_oversized_body_is_refused_with_its_own_type() -> None:
    with pytest.raises(XmlTooLargeError, match="exceeds the limit of 1000 bytes") as caught:
        parse_untrusted(b"<a>" + b"x" * 1000 + b"</a>", XmlLimits(max_bytes=1000))
    assert isinstance(caught.value, UnsafeXmlError)  # still refused as unsafe by whoever catches that


def test_other_unsafe_xml_is_not_taken_for_too_large() -> None:
    with pytest.raises(UnsafeXmlError) as caught:
        parse_untrusted(b"<a>" * 11 + b"</a>" * 11, XmlLimits(max_depth=10))
    assert not isinstance(caught.value, XmlTooLargeError)


@pytest.mark.parametrize("error", [AuthError, ApiError, ApiFailure])
def test_the_api_errors_are_in_the_one_tree(error: type[Exception]) -> None:
    assert issubclass(error, BusError)
