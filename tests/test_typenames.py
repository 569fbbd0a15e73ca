"""Type names and payload conversion: what a type is called on the wire and what its
payload looks like, so Python and .NET members of a group understand each other."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

import attrs
import cattrs
import pytest

from trio_wsproxy.protocol.typenames import (
    PayloadError,
    TypeRegistry,
    dotnet_generic_name,
    message_type,
    normalize_type_name,
    pascal_case,
)

DOTNET_LIST_OF_STRING = (
    "System.Collections.Generic.List`1[[System.String, System.Private.CoreLib, "
    "Version=8.0.0.0, Culture=neutral, PublicKeyToken=7cec85d7bea7798e]]"
)


@attrs.frozen
class SocketMessage:
    message: str
    reply_required: bool = False


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Priority(enum.IntEnum):
    LOW = 0
    HIGH = 2


@attrs.frozen
class Point:
    x_pos: float
    y_pos: float


@attrs.frozen
class Shape:
    name: str
    points: list[Point]
    colour: Colour
    priority: Priority
    created_at: dt.datetime
    owner_id: uuid.UUID
    label: str | None = None
    thumbnail: bytes = b""
    centre: Point | None = None


@message_type("Game.Models.Move", pascal_case=True)
@attrs.frozen
class Move:
    player_name: str
    to: Point


def test_primitives_travel_under_their_dotnet_names() -> None:
    types = TypeRegistry()
    assert types.name_of(str) == "System.String"
    assert types.name_of(bool) == "System.Boolean"
    assert types.name_of(int) == "System.Int32"
    assert types.name_of(float) == "System.Double"
    assert types.name_for_value(True, bool) == "System.Boolean"


def test_an_int_is_always_int32_on_the_way_out_and_any_integer_name_reads_back_as_int() -> None:
    types = TypeRegistry()
    assert types.name_for_value(2**31 - 1, int) == "System.Int32"
    assert types.name_for_value(2**31, int) == "System.Int32"  # refused when sent
    assert types.name_for_value(2**31, "System.Int64") == "System.Int64"
    for name in ("System.Int32", "System.Int64", "System.Int16", "System.UInt64"):
        assert types.type_named(name) is int
    assert types.type_named("System.Single") is float


def test_an_unregistered_class_travels_as_module_dot_qualname() -> None:
    types = TypeRegistry()
    default_name = f"{SocketMessage.__module__}.SocketMessage"
    assert default_name.endswith("test_typenames.SocketMessage")
    assert types.name_of(SocketMessage) == default_name
    assert types.type_named(default_name) is SocketMessage


def test_one_line_registers_a_dotnet_name_and_pascal_case_fields() -> None:
    types = TypeRegistry()
    types.register(SocketMessage, "SharedData.Models.SocketMessage", pascal_case=True)
    assert types.name_of(SocketMessage) == "SharedData.Models.SocketMessage"
    assert types.type_named("SharedData.Models.SocketMessage") is SocketMessage
    assert types.unstructure(SocketMessage("Hi", True), SocketMessage) == {
        "Message": "Hi",
        "ReplyRequired": True,
    }
    dotnet_payload = {"Message": "Hello from Client 1", "ReplyRequired": False}
    assert types.structure(dotnet_payload, SocketMessage) == SocketMessage("Hello from Client 1")
    # The default name no longer maps to it: one name per type.
    assert types.type_named(f"{SocketMessage.__module__}.SocketMessage") is None


def test_pascal_case_reaches_nested_classes_that_were_not_registered_themselves() -> None:
    types = TypeRegistry()
    types.register(Shape, "Drawing.Shape", pascal_case=True)
    shape = Shape(
        name="tri",
        points=[Point(0, 0), Point(1.5, 2)],
        colour=Colour.GREEN,
        priority=Priority.HIGH,
        created_at=dt.datetime(2024, 5, 1, 10, 20, 30, 123456, tzinfo=dt.UTC),
        owner_id=uuid.UUID("3f2504e0-4f89-41d3-9a0c-0305e82c3301"),
        thumbnail=b"\x00\xff",
    )
    data = types.unstructure(shape, Shape)
    assert data == {
        "Name": "tri",
        "Points": [{"XPos": 0, "YPos": 0}, {"XPos": 1.5, "YPos": 2}],
        "Colour": "green",
        "Priority": 2,
        "CreatedAt": "2024-05-01T10:20:30.123456+00:00",
        "OwnerId": "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
        "Label": None,
        "Thumbnail": "AP8=",  # base64, as System.Text.Json writes byte[]
        "Centre": None,
    }
    assert types.structure(data, Shape) == shape


def test_a_nested_class_registered_on_its_own_keeps_its_own_field_names() -> None:
    types = TypeRegistry()
    types.register(Point, "Geo.Point", rename={"x_pos": "lon", "y_pos": "lat"})
    types.register(Move, pascal_case=True)
    assert types.unstructure(Move("ann", Point(1, 2)), Move) == {
        "PlayerName": "ann",
        "To": {"lon": 1, "lat": 2},
    }


def test_the_message_type_decorator_is_read_when_a_registry_first_meets_the_class() -> None:
    types = TypeRegistry()
    assert types.name_of(Move) == "Game.Models.Move"
    assert types.unstructure(Move("bob", Point(3, 4)), Move) == {
        "PlayerName": "bob",
        "To": {"XPos": 3, "YPos": 4},
    }
    assert types.type_named("Game.Models.Move") is Move


def test_registering_a_decorated_class_refines_its_decorator() -> None:
    types = TypeRegistry()
    types.register(Move, rename={"to": "Target"})
    assert types.name_of(Move) == "Game.Models.Move"
    assert types.unstructure(Move("cy", Point(0, 1)), Move) == {
        "PlayerName": "cy",
        "Target": {"XPos": 0, "YPos": 1},
    }


def test_a_registry_can_make_pascal_case_the_default_for_every_class() -> None:
    types = TypeRegistry(pascal_case=True)
    assert types.unstructure(Point(1, 2), Point) == {"XPos": 1, "YPos": 2}
    assert types.structure({"XPos": 5, "YPos": 6}, Point) == Point(5, 6)


def test_dates_written_by_dotnet_read_back() -> None:
    types = TypeRegistry()
    # .NET writes seven fractional digits; DateTime with Kind=Unspecified has no offset.
    assert types.structure("2024-05-01T10:20:30.1234567Z", dt.datetime) == dt.datetime(
        2024, 5, 1, 10, 20, 30, 123456, tzinfo=dt.UTC
    )
    assert types.structure("2024-05-01T10:20:30", dt.datetime) == dt.datetime(
        2024, 5, 1, 10, 20, 30
    )


def test_a_list_of_strings_is_dotnets_generic_list_whatever_runtime_wrote_it() -> None:
    types = TypeRegistry()
    assert types.name_of(list[str]) == DOTNET_LIST_OF_STRING
    assert types.type_named(DOTNET_LIST_OF_STRING) == list[str]
    dotnet6 = DOTNET_LIST_OF_STRING.replace("Version=8.0.0.0", "Version=6.0.0.0")
    assert types.type_named(dotnet6) == list[str]
    assert types.structure(["Line 1", "Line 2"], list[str]) == ["Line 1", "Line 2"]


def test_any_generic_alias_can_be_registered_under_an_explicit_name() -> None:
    types = TypeRegistry()
    name = "System.Collections.Generic.List`1[[Geo.Point, Geo, Version=1.0.0.0]]"
    types.register(list[Point], name)
    assert types.name_of(list[Point]) == name
    assert types.type_named(name.replace("1.0.0.0", "2.0.0.0")) == list[Point]
    assert types.structure([{"x_pos": 1, "y_pos": 2}], list[Point]) == [Point(1, 2)]


def test_dotnet_names_lose_their_assembly_qualifiers_when_normalized() -> None:
    dictionary = (
        "System.Collections.Generic.Dictionary`2[[System.String, System.Private.CoreLib, "
        "Version=8.0.0.0, Culture=neutral, PublicKeyToken=7cec85d7bea7798e],[System.Int32, "
        "System.Private.CoreLib, Version=8.0.0.0, Culture=neutral, "
        "PublicKeyToken=7cec85d7bea7798e]]"
    )
    assert normalize_type_name(dictionary) == (
        "System.Collections.Generic.Dictionary`2[[System.String],[System.Int32]]"
    )
    nested = dotnet_generic_name(
        "System.Collections.Generic.List`1",
        dotnet_generic_name("System.Collections.Generic.List`1", "System.String"),
    )
    assert normalize_type_name(nested) == (
        "System.Collections.Generic.List`1[[System.Collections.Generic.List`1[[System.String]]]]"
    )
    assert (
        normalize_type_name("SharedData.Models.SocketMessage") == "SharedData.Models.SocketMessage"
    )


def test_two_types_cannot_share_a_name() -> None:
    types = TypeRegistry()
    types.register(SocketMessage, "Shared.Message")
    types.register(SocketMessage, "Shared.Message")  # the same registration again is fine
    with pytest.raises(ValueError, match="already registered"):
        types.register(Point, "Shared.Message")
    with pytest.raises(ValueError, match="already registered"):
        types.register(Point, "System.String")


def test_bytes_are_binary_frames_not_a_type_name() -> None:
    with pytest.raises(ValueError, match="binary frames"):
        TypeRegistry().register(bytes, "System.Byte[]")


def test_renaming_a_field_that_does_not_exist_is_an_error() -> None:
    with pytest.raises(ValueError, match="no field"):
        TypeRegistry().register(Point, rename={"z_pos": "Z"})


@pytest.mark.parametrize(
    ("payload", "tp"),
    [
        ("false", bool),  # a string is not a boolean, even one that reads like one
        (1, bool),
        ("3", int),
        (True, int),
        (2.5, int),
        ("1.5", float),
        (None, str),
        (7, str),
        ("not a guid", uuid.UUID),
        ("yesterday", dt.datetime),
        ("*not base64*", bytes),
        ({"message": "hi"}, SocketMessage),  # wrong field names
        ({"Message": 5}, SocketMessage),
        ("just text", SocketMessage),
    ],
)
def test_payloads_that_do_not_fit_raise_payload_error(payload: Any, tp: Any) -> None:
    types = TypeRegistry()
    types.register(SocketMessage, pascal_case=True)
    with pytest.raises(PayloadError, match="does not fit"):
        types.structure(payload, tp)


def test_a_payload_error_names_the_offending_field() -> None:
    types = TypeRegistry()
    with pytest.raises(PayloadError) as caught:
        types.structure({"message": "hi", "reply_required": "yes"}, SocketMessage)
    assert "reply_required" in str(caught.value)
    assert "expected true or false" in str(caught.value)


def test_numbers_widen_where_dotnet_would() -> None:
    types = TypeRegistry()
    assert types.structure(3, float) == 3.0
    assert isinstance(types.structure(3, float), float)
    assert types.structure(4.0, int) == 4


def test_optional_fields_may_be_missing_or_null() -> None:
    types = TypeRegistry()
    assert types.structure({"message": "hi"}, SocketMessage) == SocketMessage("hi")
    assert types.structure({"x_pos": 1, "y_pos": 2, "extra": "ignored"}, Point) == Point(1, 2)


def test_a_converter_of_your_own_keeps_its_hooks() -> None:
    converter = cattrs.Converter()
    converter.register_unstructure_hook(Colour, lambda colour: colour.name)
    converter.register_structure_hook(Colour, lambda value, _: Colour[value])
    types = TypeRegistry(converter)
    assert types.converter is converter
    assert types.unstructure(Colour.RED, Colour) == "RED"
    assert types.structure("GREEN", Colour) is Colour.GREEN


def test_pascal_case_names() -> None:
    assert pascal_case("reply_required") == "ReplyRequired"
    assert pascal_case("message") == "Message"
    assert pascal_case("_private_id") == "PrivateId"
    assert pascal_case("html_URL") == "HtmlURL"
