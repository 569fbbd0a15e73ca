"""The OpenAPI 3.1 document of the HTTP API (served at ``/api/openapi.json``).

Written out here rather than generated: the API is a few calls, and this way the
document is the contract the suite fuzzes the relay against (schemathesis), not a
description derived from the code it checks.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from ..protocol.version import VERSION

_ERROR_REF = {"$ref": "#/components/schemas/Error"}
#: A group or member id: no control characters (C0, DEL, C1).
ID_PATTERN = "^[^\x00-\x1f\x7f-\x9f]*$"
#: The longest ``?type=`` a post takes, in characters: room for .NET's full names of
#: generic types, which name each argument's assembly (a List<string>'s takes 150).
MAX_TYPE_LENGTH = 1024
#: The longest ban one removal may set (``?ban=``), in seconds: a year; more is a typo.
MAX_BAN_SECONDS = 365 * 24 * 3600


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


def _ok(description: str, schema: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


_COMMON = {
    "400": _error("A malformed request: an id that is empty, too long or has control "
                  "characters, an unknown query parameter, a body that is not UTF-8 text."),
    "401": _error("No API key, or the wrong one (the answer has WWW-Authenticate: Bearer)."),
    "404": _error("No such member, or no API at all: the relay has no API key."),
    "408": _error("A body the call does not take that did not all come within the relay's "
                  "stream_timeout."),
    "413": _error("A body too large: over max_message_size for a post; over 64 KiB for a "
                  "call that takes none."),
    "503": _error("The relay's backplane is down: it cannot answer for the whole cluster."),
    "500": _error("A bug in the relay, never the caller's fault: logged, and the "
                  "connection closed."),
}  # fmt: skip


def _id_parameter(name: str, where: str, description: str, max_length: int) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": max_length,
            "pattern": ID_PATTERN,
        },
    }


def _count_parameter(name: str, description: str) -> dict[str, Any]:
    maximum = 1000 if name == "limit" else 10**18 - 1
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "integer", "minimum": 1 if name == "limit" else 0, "maximum": maximum},
    }


@cache
def openapi_document(max_id_length: int = 256) -> dict[str, Any]:
    """The document, for a relay whose ids are at most ``max_id_length`` characters."""
    group = _id_parameter("group", "path", "The group's name (groupName).", max_id_length)
    member = _id_parameter("id", "path", "The member's id in the group.", max_id_length)
    to = _id_parameter("to", "query", "Send to this member of the group only.", max_id_length)
    message_type = _id_parameter(
        "type",
        "query",
        "Send the body (at most 1 MiB) as a typed message of this type, named as .NET "
        "names it (e.g. Chat.Message), in the envelope "
        '{"Id":null,"MessageType":TYPE,"Message":PAYLOAD,"ReplyId":null}. The payload is '
        "an application/json body as it is (400 if it is not JSON), a text/* body as a "
        "JSON string, an application/octet-stream body as a base64 string.",
        MAX_TYPE_LENGTH,
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "trio_wsproxy HTTP API",
            "version": VERSION,
            "description": (
                "For back ends: post messages into groups, list groups and members, "
                "remove a member (and keep it out for a while). Served on the relay's "
                "port when it has an API key; "
                "with a Redis backplane, any node answers for the whole cluster."
            ),
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/groups": {
                "get": {
                    "operationId": "listGroups",
                    "summary": "The groups that have members, with their sizes",
                    "responses": {"200": _ok("The groups, by name.", "Groups"), **_COMMON},
                }
            },
            "/api/groups/{group}/members": {
                "get": {
                    "operationId": "listMembers",
                    "summary": "The ids of a group's members (none for an empty group)",
                    "parameters": [group],
                    "responses": {"200": _ok("The members, sorted.", "Members"), **_COMMON},
                }
            },
            "/api/groups/{group}/members/{id}": {
                "delete": {
                    "operationId": "removeMember",
                    "summary": "Close a member's connection with 4005 (do not reconnect) and "
                    "keep it out of the group for a while",
                    "parameters": [
                        group,
                        member,
                        {
                            "name": "ban",
                            "in": "query",
                            "required": False,
                            "description": (
                                "Seconds the member's joins to this group are then refused "
                                "(403), on the node that answers; 0: none. Default: the "
                                "relay's ban_seconds (--ban-seconds, 60). A token issued "
                                "after the removal, or DELETE .../bans/{id}, lets it back."
                            ),
                            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_BAN_SECONDS},
                        },
                    ],
                    "responses": {
                        **_COMMON,  # (first: what the call says of a status is more exact)
                        "204": {"description": "The member is being closed (and kept out)."},
                        "400": _error(
                            "A malformed request: an id that is empty, too long or has "
                            "control characters; a ban that is not whole seconds from 0 to "
                            f"{MAX_BAN_SECONDS}, or given twice; an unknown query parameter."
                        ),
                        "404": _error("No such member in the group."),
                    },
                }
            },
            "/api/groups/{group}/members/{id}/groups": {
                "get": {
                    "operationId": "listMemberGroups",
                    "summary": "The groups of the connection that is this member of the group "
                    "(a wsproxy.v1 connection may be in several)",
                    "parameters": [group, member],
                    "responses": {
                        **_COMMON,
                        "200": _ok("The member's groups, sorted.", "MemberGroups"),
                        "404": _error("No such member in the group."),
                    },
                }
            },
            "/api/groups/{group}/members/{id}/groups/{other}": {
                "put": {
                    "operationId": "addMemberToGroup",
                    "summary": "Have the connection that is this member of the group join "
                    "another group too (it gets that group's welcome); no token or ban is "
                    "asked, the relay's limits hold",
                    "parameters": [
                        group,
                        member,
                        _id_parameter("other", "path", "The group to join.", max_id_length),
                    ],
                    "responses": {
                        **_COMMON,
                        "200": _ok("Joined: the member's groups now.", "MemberGroups"),
                        "202": _ok(
                            "The member is on another node, asked to join (its welcome, or "
                            "the refusal in its log, follows there).",
                            "MemberGroups",
                        ),
                        "400": _error(
                            "A malformed request, or a group name no member may join (not "
                            "printable)."
                        ),
                        "404": _error("No such member in the group."),
                        "409": _error(
                            "The member is in that group already, in as many groups as the "
                            "relay allows (max_groups_per_member), or a plain member (not "
                            "wsproxy.v1: one group only)."
                        ),
                        "503": _error(
                            "A limit of the group or the relay, or the backplane is down."
                        ),
                    },
                }
            },
            "/api/revocations": {
                "post": {
                    "operationId": "revoke",
                    "summary": "Revoke a subject's tokens issued until now, or one token: "
                    "every connection of it is closed with 4007 on every node, and its "
                    "handshakes and joins are refused (401) while the revocation lasts",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/RevocationRequest"}
                            }
                        },
                    },
                    "responses": {
                        **_COMMON,
                        "200": _ok("Revoked.", "Revocation"),
                        "400": _error(
                            'A body that is not {"sub": ...} or {"jti": ...} (with an '
                            'optional "seconds" from 1 to a year).'
                        ),
                        "409": _error("The relay checks no access tokens."),
                    },
                }
            },
            "/api/groups/{group}/bans/{id}": {
                "delete": {
                    "operationId": "liftBan",
                    "summary": "Let a member the API removed join the group again now",
                    "parameters": [group, member],
                    "responses": {
                        **_COMMON,
                        "204": {"description": "The ban is lifted."},
                        "404": _error("No ban on this member in this group on this node."),
                    },
                }
            },
            "/api/groups/{group}/messages": {
                "post": {
                    "operationId": "postMessage",
                    "summary": "Send the body as one message to the group's members",
                    "parameters": [group, to, message_type],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                            # Any text (UTF-8) is one message; the relay never parses it.
                            "text/plain": {"schema": {}},
                            "application/json": {"schema": {}},
                        },
                    },
                    "responses": {
                        **_COMMON,
                        "200": _ok("The message went to the members counted.", "Recipients"),
                        "400": _error(
                            "A malformed request: an id or type that is empty, too long or "
                            "has control characters, an unknown or repeated query parameter, "
                            "a body that is not UTF-8 text; with type, an application/json "
                            "body that is not JSON."
                        ),
                        "404": _error("``to`` names no member of the group."),
                        "408": _error(
                            "The body fell behind its pace: 1 MiB of it, or its end, per "
                            "the relay's stream_timeout."
                        ),
                        "413": _error(
                            "The body is larger than the relay's max_message_size (counting "
                            "the envelope, with type), or than 1 MiB with type."
                        ),
                        "415": _error("The Content-Type is not binary, text or JSON."),
                    },
                }
            },
            "/api/groups/{group}/history": {
                "get": {
                    "operationId": "readHistory",
                    "summary": "The messages kept in a group's history (--history-size)",
                    "parameters": [
                        group,
                        _count_parameter("since", "Messages after this offset (0: all kept)."),
                        _count_parameter("limit", "At most this many (1 to 1000; 100)."),
                    ],
                    "responses": {
                        "200": _ok("The history's epoch, bounds and messages.", "History"),
                        **_COMMON,
                    },
                }
            },
            "/api/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "The OpenAPI document.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **_COMMON,
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
                "Groups": {
                    "type": "object",
                    "required": ["groups"],
                    "properties": {
                        "groups": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "members"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "members": {"type": "integer", "minimum": 1},
                                },
                            },
                        }
                    },
                },
                "Members": {
                    "type": "object",
                    "required": ["members"],
                    "properties": {"members": {"type": "array", "items": {"type": "string"}}},
                },
                "RevocationRequest": {
                    "type": "object",
                    "properties": {
                        "sub": {"type": "string", "minLength": 1, "maxLength": 1024},
                        "jti": {"type": "string", "minLength": 1, "maxLength": 1024},
                        "seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 31536000},
                    },
                    "additionalProperties": False,
                },
                "Revocation": {
                    "type": "object",
                    "required": ["until", "closed_here"],
                    "properties": {
                        "sub": {"type": "string"},
                        "jti": {"type": "string"},
                        "until": {"type": "number"},
                        "closed_here": {"type": "integer", "minimum": 0},
                    },
                },
                "MemberGroups": {
                    "type": "object",
                    "required": ["id", "group", "groups"],
                    "properties": {
                        "id": {"type": "string"},
                        "group": {"type": "string"},
                        "groups": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "History": {
                    "type": "object",
                    "required": ["epoch", "first", "last", "messages"],
                    "properties": {
                        "epoch": {"type": ["string", "null"]},
                        "first": {"type": "integer", "minimum": 1},
                        "last": {"type": "integer", "minimum": 0},
                        "messages": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["offset", "kept"],
                                "properties": {
                                    "offset": {"type": "integer", "minimum": 1},
                                    "kept": {"type": "boolean"},
                                    "from": {"type": ["string", "null"]},
                                    "to": {"type": ["string", "null"]},
                                    "text": {"type": "string"},
                                    "binary": {"type": "string", "contentEncoding": "base64"},
                                },
                            },
                        },
                    },
                },
                "Recipients": {
                    "type": "object",
                    "required": ["recipients"],
                    "properties": {"recipients": {"type": "integer", "minimum": 0}},
                },
            },
        },
    }
