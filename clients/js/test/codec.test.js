// The client's codecs against the shared test vectors (docs/protocol-vectors.json), the
// same file the Python client's tests load, so that the two cannot drift.
//   node --test clients/js/test/

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  decodeEnvelope,
  decodeRelayMessage,
  EnvelopeError,
  encodeEnvelope,
  frameFor,
  connectionUrl,
  joinFrame,
  leaveFrame,
  tokenFrame,
  newMessageId,
  normalizeMessageId,
  reconnectDelay,
  V1Error,
} from "../wsproxy.js";

const vectors = JSON.parse(
  readFileSync(new URL("../../../docs/protocol-vectors.json", import.meta.url), "utf8"),
);
const hex = (value) => Buffer.from(value, "hex");
const text = (value) => hex(value).toString("utf8");

test("the vectors name the subprotocol the client speaks", () => {
  assert.equal(vectors.subprotocol, "wsproxy.v1");
  assert.ok(vectors.vectors.length > 10);
});

for (const vector of vectors.vectors.filter((v) => v.direction === "member-to-relay")) {
  if (vector.meaning.error) continue; // the relay's refusals: this client never sends them
  if (vector.hex.startsWith("7b7d0a")) continue; // "{}" for the group: the relay takes it; the client writes "\n"
  test(`a member sends: ${vector.name}`, () => {
    const { to, group = null, payload_hex: payloadHex } = vector.meaning;
    let frame;
    if ("join" in vector.meaning) frame = joinFrame(vector.meaning.join, vector.meaning.since);
    else if ("leave" in vector.meaning) frame = leaveFrame(vector.meaning.leave);
    else if ("token" in vector.meaning) frame = tokenFrame(vector.meaning.token);
    else if (vector.opcode === "text") frame = frameFor(text(payloadHex), to, group);
    else frame = frameFor(hex(payloadHex), to, group);
    if (vector.opcode === "text") {
      assert.equal(typeof frame, "string");
      assert.equal(frame, text(vector.hex));
    } else {
      assert.ok(frame instanceof Uint8Array);
      assert.equal(Buffer.from(frame).toString("hex"), vector.hex);
    }
  });
}

for (const vector of vectors.vectors.filter((v) => v.direction === "relay-to-member")) {
  test(`the relay sends: ${vector.name}`, () => {
    const data = vector.opcode === "text" ? text(vector.hex) : new Uint8Array(hex(vector.hex));
    const { header, payload } = decodeRelayMessage(data);
    const meaning = vector.meaning;
    if ("from" in meaning) {
      assert.deepEqual(header, {
        kind: "from",
        sender: meaning.from,
        direct: meaning.direct,
        offset: meaning.offset ?? null,
        group: meaning.group ?? null,
      });
      const bytes = typeof payload === "string" ? Buffer.from(payload, "utf8") : Buffer.from(payload);
      assert.equal(bytes.toString("hex"), meaning.payload_hex);
      return;
    }
    assert.equal(payload, "");
    assert.equal(header.kind, meaning.event);
    const connectionEvent = meaning.event === "token_expiring" || meaning.event === "token_refreshed";
    if (meaning.event !== "welcome" && meaning.event !== "left" && !connectionEvent && !("group" in meaning)) {
      assert.equal(header.group, null, "an event of the URL's group names none");
    }
    const { event, ...fields } = meaning;
    for (const [key, value] of Object.entries(fields)) {
      const got = header[key];
      if (key === "recovery") {
        assert.deepEqual(got, { recovered: value.recovered, missed: value.missed ?? 0, reason: value.reason ?? null });
      } else {
        assert.deepEqual(got, value, key);
      }
    }
  });
}

test("relay messages that break the format are refused", () => {
  for (const data of ["no line", "[]\n", '{"event":"nope"}\n', '{"event":"welcome"}\n', '{"from":3}\nx']) {
    assert.throws(() => decodeRelayMessage(data), V1Error, data);
  }
  assert.throws(() => decodeRelayMessage(new Uint8Array([0xff, 0x0a])), V1Error);
});

test("the envelope is the .NET library's, byte for byte", () => {
  const hello =
    '{"Id":null,"MessageType":"SharedData.Models.SocketMessage",' +
    '"Message":{"Message":"Hello from Client 1","ReplyRequired":false},"ReplyId":null}';
  const frame = encodeEnvelope("SharedData.Models.SocketMessage", {
    Message: "Hello from Client 1",
    ReplyRequired: false,
  });
  assert.equal(frame, hello);
  assert.deepEqual(decodeEnvelope(hello), {
    messageType: "SharedData.Models.SocketMessage",
    value: { Message: "Hello from Client 1", ReplyRequired: false },
    id: null,
    replyId: null,
  });
  // Lenient where .NET is: missing fields are null, unknown keys are ignored.
  assert.deepEqual(decodeEnvelope('{"MessageType":"System.String","X":1}'), {
    messageType: "System.String",
    value: null,
    id: null,
    replyId: null,
  });
  for (const bad of ["nope", "[]", '{"MessageType":""}', '{"MessageType":"T","Id":5}']) {
    assert.throws(() => decodeEnvelope(bad), EnvelopeError, bad);
  }
});

test("ids: fresh GUIDs, and any GUID spelling matches its reply", () => {
  const id = newMessageId();
  assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.notEqual(id, newMessageId());
  assert.equal(normalizeMessageId(`{${id.toUpperCase()}}`), id);
  assert.equal(normalizeMessageId(id.replaceAll("-", "")), id);
  assert.equal(normalizeMessageId("not-a-guid"), "not-a-guid");
});

test("the join URL carries the id, the group, a token and a position", () => {
  const url = connectionUrl("ws://127.0.0.1:8765/ws", {
    group: "lobby",
    id: "zoë",
    accessToken: "t.k.n",
    since: "abc:12",
  });
  const parsed = new URL(url);
  assert.equal(parsed.searchParams.get("groupName"), "lobby");
  assert.equal(parsed.searchParams.get("id"), "zoë");
  assert.equal(parsed.searchParams.get("access_token"), "t.k.n");
  assert.equal(parsed.searchParams.get("since"), "abc:12");
  assert.throws(() => connectionUrl("http://x/ws", { group: "g" }), TypeError);
  assert.throws(() => connectionUrl("ws://x/ws?groupName=a", { group: "b" }), TypeError);
});

test("backoff doubles up to its cap, shortened by jitter", () => {
  const none = { min: 500, max: 30000, jitter: 0.5, random: () => 0 };
  assert.deepEqual([0, 1, 2, 10].map((n) => reconnectDelay(n, none)), [500, 1000, 2000, 30000]);
  assert.equal(reconnectDelay(0, { ...none, random: () => 1 }), 250);
});
