// The frames a .NET WsProxyClient writes (issue 28), recorded in tests/js/dotnet-frames.json
// by the suite's faithful .NET stand-in (tests/dotnet_peer.py; tests/test_dotnet_faithful.py
// keeps the file up to date): this client reads each as the value and type .NET meant, and
// what it writes for the same value is what .NET writes, but for the differences
// docs/dotnet.md documents. On a stand-in socket: no relay needed.
//   node --test clients/js/test/

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mock, test } from "node:test";

import {
  Client,
  decodeEnvelope,
  dotnetGenericName,
  EMPTY_GUID,
  encodeEnvelope,
  isDotnetGuid,
  normalizeTypeName,
  runtimeVersionOf,
} from "../wsproxy.js";

const { frames } = JSON.parse(
  readFileSync(new URL("../../../tests/js/dotnet-frames.json", import.meta.url), "utf8"),
);
const LIST = "System.Collections.Generic.List`1";
const KEYS = ["Id", "MessageType", "Message", "ReplyId"];
const LOWER_D = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const INTEGERS = new Set(["System.Int16", "System.Int32", "System.Int64", "System.UInt16", "System.UInt32", "System.UInt64", "System.Byte", "System.SByte"]);

/** A frame's name in a test title: its type (without assembly qualifiers, with the runtime
 * version of a generic one), its value, and what its ids make it. */
const title = (sample) =>
  `${normalizeTypeName(sample.type)}${runtimeVersionOf(sample.type) ? ` (.NET ${runtimeVersionOf(sample.type)})` : ""} ${JSON.stringify(sample.value)}` +
  (sample.id ? " as a request" : "") +
  (sample.replyId === EMPTY_GUID ? " answering a message without an Id" : sample.replyId ? " answering a request" : "");

/** A client over a stand-in plain connection (.NET's wire: no v1 header), the frames it
 * writes, and a function feeding it a frame a member sent. */
function connected(options = {}) {
  const client = new Client("ws://relay/ws?groupName=g", { WebSocket: class {}, id: "js", ...options });
  const written = [];
  client._ws = { readyState: 1, send: (data) => written.push(data) };
  client.state = "connected";
  const feed = (frame) => client._take(frame, () => {});
  const bad = [];
  client.addEventListener("badmessage", (event) => bad.push(event.detail));
  return { client, written, feed, bad };
}

/** A client with a handler for `type` (the hold released), and what the handler gets. */
async function listening(type, options) {
  const got = [];
  const standIn = connected(options);
  standIn.client.on(type, (value, incoming) => got.push({ value, incoming }));
  await Promise.resolve(); // (handed out in a microtask: see hold.test.js)
  return { ...standIn, got };
}

// docs/dotnet.md: "System.Text.Json escapes non-ASCII, HTML-sensitive characters (`<`, `&`,
// `'`, `+`, …) and `"` as `\uXXXX` where we write them as they are (`"` as `\"`)" — the
// JS client "same as Python (JSON.stringify)". The HTML-sensitive ones System.Text.Json's
// default encoder escapes are these (tests/dotnet_peer.py's _UNSAFE_ASCII, less `\`,
// which both write as `\\`).
const HTML_SENSITIVE = new Set(["<", ">", "&", "'", "+", "`"]);
const ESCAPE = /\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|\\./g;

/** `frame` (JSON text .NET wrote) with each escape docs/dotnet.md says the JS client
 * writes otherwise written as JSON.stringify writes it; any other escape is left as it is
 * (so that a comparison shows it), as is everything outside strings. Also returns the
 * characters it unescaped. */
function asJsonStringifyWrites(frame) {
  const unescaped = [];
  const text = frame.replace(ESCAPE, (escape) => {
    if (!escape.startsWith("\\u")) return escape;
    const char = JSON.parse(`"${escape}"`);
    const documented = char === '"' || HTML_SENSITIVE.has(char) || char.codePointAt(0) > 0x7f;
    if (!documented) return escape;
    unescaped.push(char);
    return char === '"' ? '\\"' : char;
  });
  return { text, unescaped };
}

/** Assert that `written` (the JS client's frame) is what .NET's `frame` says, byte for
 * byte but for the differences docs/dotnet.md documents (and the one it does not, below);
 * `ids` replaces .NET's Id/ReplyId with the ones the JS client chose. */
function assertSameAsDotnet(written, sample, ids = {}) {
  const parsed = JSON.parse(written);
  // .NET's MessageWrapper: these four keys, in this order, compact.
  assert.deepEqual(Object.keys(parsed), KEYS);
  for (const key of ["Id", "ReplyId"]) {
    // .NET writes (and we send) a Guid? as null or a lower-case D-format GUID.
    assert.ok(parsed[key] === null || LOWER_D.test(parsed[key]), `${key} ${parsed[key]}`);
  }
  let expected = sample.frame;
  for (const [key, id] of Object.entries(ids)) {
    const recorded = JSON.stringify(sample[key === "Id" ? "id" : "replyId"]);
    expected = expected.replace(`"${key}":${recorded}`, `"${key}":${JSON.stringify(id)}`);
  }
  const { text } = asJsonStringifyWrites(expected);
  if (written === text) return;
  // Not documented in docs/dotnet.md: a double .NET writes in E notation (1E+20) is one
  // JSON.stringify writes in its own spelling (100000000000000000000, 1e+21, 1e-7). The
  // same number, and .NET reads it: it takes Message as JsonElement.ToString() (the text
  // as written) and a System.Double from that with Convert.ToDouble, which reads either.
  assert.equal(sample.type, "System.Double", "only a double's spelling may differ");
  assert.match(sample.frame, /"Message":-?[0-9.]+E[+-][0-9]+,/);
  assert.equal(JSON.parse(written).Message, JSON.parse(sample.frame).Message);
  assert.equal(written.replace(/"Message":[^,]*,/, ""), text.replace(/"Message":[^,]*,/, ""));
}

test("the recorded frames are .NET's: envelopes of typed values, requests and answers", () => {
  assert.ok(frames.length >= 15);
  for (const sample of frames) {
    assert.equal(sample.frame, sample.frame.trim());
    assert.deepEqual(Object.keys(JSON.parse(sample.frame)), KEYS);
  }
  assert.ok(frames.some((sample) => sample.id !== null));
  assert.ok(frames.some((sample) => sample.replyId === EMPTY_GUID));
  assert.ok(frames.some((sample) => sample.replyId !== null && sample.replyId !== EMPTY_GUID));
});

// -- reading: every frame is the value and type .NET meant ------------------------------------

for (const sample of frames) {
  test(`reads what .NET sent: ${title(sample)}`, () => {
    assert.deepEqual(decodeEnvelope(sample.frame), {
      messageType: sample.type,
      value: sample.value,
      id: sample.id,
      replyId: sample.replyId,
    });
    if (INTEGERS.has(sample.type)) assert.ok(Number.isSafeInteger(decodeEnvelope(sample.frame).value));
  });

  if (sample.value === null) continue; // (what .NET drops: below)
  test(`hands it to the handlers of its type: ${title(sample)}`, async () => {
    const { feed, got, bad, written } = await listening(sample.type);
    feed(sample.frame);
    assert.deepEqual(bad, []);
    assert.equal(got.length, 1);
    const { value, incoming } = got[0];
    assert.deepEqual(value, sample.value);
    assert.deepEqual(
      [incoming.messageType, incoming.id, incoming.replyId, incoming.wantsReply],
      [sample.type, sample.id, sample.replyId, sample.id !== null],
    );
    // An answer to a request this client did not make is an ordinary message (.NET
    // matches a reply by its ReplyId alone, else handles it as a message); so is
    // ReplyId Guid.Empty (docs/dotnet.md: "every receiver takes it for an ordinary
    // message"). Nothing is written back.
    assert.deepEqual(written, []);
  });
}

test("a generic name matches its handler whatever .NET runtime version wrote it", async () => {
  const lists = frames.filter((sample) => sample.type.startsWith(LIST));
  assert.deepEqual(lists.map((sample) => /Version=([0-9.]+)/.exec(sample.type)[1]).sort(), ["7.0.0.0", "8.0.0.0"]);
  const { feed, got } = await listening(dotnetGenericName(LIST, ["System.String"]));
  for (const sample of lists) feed(sample.frame);
  assert.deepEqual(got.map(({ value }) => value), lists.map((sample) => sample.value));
  assert.deepEqual(got.map(({ incoming }) => incoming.messageType), lists.map((sample) => sample.type));
});

// -- writing: the same value, the bytes .NET would accept --------------------------------------

for (const sample of frames.filter((s) => s.id === null && s.replyId === null)) {
  test(`writes what .NET writes: ${title(sample)}`, async () => {
    const { client, written } = connected();
    const warn = mock.method(console, "warn", () => {});
    try {
      await client.send(sample.type, sample.value);
    } finally {
      warn.mock.restore();
    }
    assert.equal(written.length, 1);
    assertSameAsDotnet(written[0], sample);
    // docs/dotnet.md: a null or "" Message .NET drops without a word; the JS client
    // "sends it, with console.warn".
    assert.equal(warn.mock.callCount(), sample.value === null || sample.value === "" ? 1 : 0);
  });
}

test("the characters .NET escapes and JSON.stringify does not are the documented ones", () => {
  const text = frames.find((sample) => sample.type === "System.String" && sample.value !== null);
  const { unescaped } = asJsonStringifyWrites(text.frame);
  // non-ASCII (é, and 😀 as a surrogate pair), HTML-sensitive characters and `"`.
  assert.deepEqual(unescaped.sort(), ['"', '"', "&", "'", "'", "+", "<", "<", ">", ">", "`", "`", "é", "😀"].sort());
  const { client, written } = connected();
  client.send("System.String", text.value);
  assert.equal(JSON.parse(written[0]).Message, text.value);
  assert.ok(written[0].includes(`<b>Fish & 'chips'</b> + \`x\` \\"q\\" \\\\ é 😀\\n`));
  // The backtick of a generic name is one of them.
  const list = frames.find((sample) => sample.type.startsWith(LIST));
  assert.ok(list.frame.includes("List\\u00601[[") && encodeEnvelope(list.type, list.value).includes("List`1[["));
});

test("a generic name goes out in the runtime version the group's .NET members wrote", async () => {
  const [dotnet7, dotnet8] = ["7.0.0.0", "8.0.0.0"].map((version) =>
    frames.find((sample) => sample.type.includes(`Version=${version}`)),
  );
  const name = dotnetGenericName(LIST, ["System.String"]);
  // Learned from the first generic name a .NET 7 member sends:
  const learned = await listening("System.Boolean");
  learned.feed(dotnet7.frame);
  assert.equal(learned.client.dotnetVersion, "7.0.0.0");
  await learned.client.send(name, dotnet7.value);
  assertSameAsDotnet(learned.written[0], dotnet7);
  // Pinned:
  const pinned = connected({ dotnetVersion: "7.0.0.0" });
  await pinned.client.send(name, dotnet7.value);
  assertSameAsDotnet(pinned.written[0], dotnet7);
  // Until one is known, .NET 8's (DOTNET_RUNTIME_VERSION):
  const fresh = connected();
  await fresh.client.send(name, dotnet8.value);
  assertSameAsDotnet(fresh.written[0], dotnet8);
});

test("a request is .NET's but for its fresh lower-case GUID, and .NET's answer resolves it", async () => {
  const request = frames.find((sample) => sample.id !== null);
  const answer = frames.find((sample) => sample.replyId === request.id);
  const { client, written, feed } = connected();
  const asked = client.request(request.type, request.value, { timeout: 5000 });
  assert.equal(written.length, 1);
  const id = JSON.parse(written[0]).Id;
  assert.ok(LOWER_D.test(id) && id !== request.id);
  assertSameAsDotnet(written[0], request, { Id: id });
  feed(answer.frame.replace(request.id, id)); // .NET's ReplyToAsync, to this request
  assert.deepEqual(await asked, answer.value);
  // In any GUID spelling .NET can read: the D format, either case.
  const again = client.request(request.type, request.value, { timeout: 5000 });
  const second = JSON.parse(written[1]).Id;
  feed(answer.frame.replace(request.id, second.toUpperCase()));
  assert.deepEqual(await again, answer.value);
});

test("an answer to .NET's request is the frame .NET's ReplyToAsync writes, byte for byte", async () => {
  const request = frames.find((sample) => sample.id !== null);
  const answer = frames.find((sample) => sample.replyId === request.id);
  for (const spelling of [request.id, request.id.toUpperCase()]) {
    const { feed, got, written } = await listening(request.type);
    feed(request.frame.replace(request.id, spelling));
    assert.equal(got[0].incoming.wantsReply, true);
    await got[0].incoming.reply(answer.type, answer.value);
    assert.deepEqual(written, [answer.frame]); // ReplyId as .NET writes a Guid: lower case
  }
});

test("an answer to a message without an Id carries Guid.Empty, as .NET's does", async () => {
  const answer = frames.find((sample) => sample.replyId === EMPTY_GUID);
  const hello = frames.find((sample) => sample.type === "SharedData.Models.SocketMessage" && sample.id === null);
  const { feed, got, written } = await listening(hello.type);
  feed(hello.frame);
  assert.equal(got[0].incoming.wantsReply, false);
  await got[0].incoming.reply(answer.type, answer.value);
  assert.deepEqual(written, [answer.frame]);
});

// -- what .NET drops ----------------------------------------------------------------------------

test("an Id or ReplyId .NET cannot read is a badmessage, neither handed out nor answered", async () => {
  // A .NET client never writes one; reading one drops its connection. docs/dotnet.md: the
  // JS client makes it "a badmessage event (invalid_envelope)".
  const request = frames.find((sample) => sample.id !== null);
  const answer = frames.find((sample) => sample.replyId === request.id);
  const { feed, got, bad, written, client } = await listening(request.type);
  client.on(answer.type, (value, incoming) => got.push({ value, incoming }));
  const spellings = [`{${request.id}}`, request.id.replaceAll("-", ""), `(${request.id})`, "request-1", ""];
  for (const spelling of spellings) {
    feed(request.frame.replace(request.id, spelling));
    feed(answer.frame.replace(request.id, spelling));
  }
  assert.deepEqual(got, []);
  assert.deepEqual(written, []);
  assert.equal(bad.length, 2 * spellings.length);
  for (const { kind, reason } of bad) {
    assert.equal(kind, "invalid_envelope");
    assert.match(reason, /is not a GUID/);
  }
  assert.ok(spellings.every((spelling) => !isDotnetGuid(spelling)));
});

test("a null Message, which .NET drops, is read as null and sent as .NET sends it, with a warning", async () => {
  const dropped = frames.filter((sample) => sample.value === null);
  assert.deepEqual(dropped.map((sample) => sample.type), ["System.String"]);
  for (const sample of dropped) {
    assert.equal(decodeEnvelope(sample.frame).value, null);
    const { client, written } = connected();
    const warn = mock.method(console, "warn", () => {});
    await client.send(sample.type, null);
    warn.mock.restore();
    assert.deepEqual(written, [sample.frame]);
    assert.match(warn.mock.calls[0].arguments[0], /drops it without a word/);
  }
});

// .NET drops a frame whose Message is null or "" without a word, and the Python client reads
// one as a BadMessage (PayloadError: "expected a string, got null"); neither hands it to a
// handler, and neither does the JS client: a badmessage (bad_payload).
test("a null or \"\" Message is not handed to the handlers (as neither .NET nor Python does)", async () => {
  const sample = frames.find((s) => s.type === "System.String" && s.value === null);
  const { feed, got } = await listening(sample.type);
  feed(sample.frame);
  feed(sample.frame.replace('"Message":null', '"Message":""'));
  assert.deepEqual(got.map(({ value }) => value), []);
});
