// The trio_wsproxy client for browsers and Node 20+: one ES module, no dependency, no
// build step. Join a group on a relay; send typed messages in the .NET envelope (so
// browser, Python and .NET members understand each other) and binary ones; request and
// reply; over the wsproxy.v1 subprotocol, who is there, who sent what, messages to one
// member, many groups on one connection; reconnect with backoff and jitter, failover over several URLs, recovery of
// what was missed meanwhile, and a report of what was sent on a connection that was lost
// (the relay confirms nothing to a sender). See docs/javascript.md.

export const SUBPROTOCOL = "wsproxy.v1";

/** Close codes after which the client reconnects, as the Python client does. */
export const DEFAULT_RECONNECT_CODES = Object.freeze([
  1001, 1006, 1011, 1012, 1013, 1014, 4001, 4002, 4003, 4004, 4006,
]);

/** What each close code means (for messages and logs). */
export const CLOSE_MEANINGS = Object.freeze({
  1000: "the relay ended the session",
  1001: "the relay is going away",
  1002: "protocol error",
  1006: "the connection dropped without a close frame",
  1007: "invalid UTF-8 in a text message",
  1008: "policy violation",
  1009: "a message was too big for the relay",
  1011: "internal error in the relay",
  1012: "the relay is restarting",
  1013: "try again later",
  4000: "replaced by a newer connection with the same id in the group",
  4001: "too slow: this client's mailbox on the relay stayed full",
  4002: "a message was cut off because its sender left mid-message",
  4003: "keepalive timeout",
  4004: "the relay's backplane could not guarantee delivery: messages may be missing",
  4005: "removed from the group by the application's back end",
  4006: "the access token expired: the client gets a new one (access_token) and reconnects",
  4007: "the access token was revoked: do not reconnect with it",
});

// -- errors --------------------------------------------------------------------------------

/** Base class of every error the client raises or rejects with. */
export class WsproxyError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}
/** A text message that is not an envelope. */
export class EnvelopeError extends WsproxyError {}
/** A wsproxy.v1 message that breaks the wire format. */
export class V1Error extends WsproxyError {}
/** No answer to a request within its timeout. */
export class RequestTimeout extends WsproxyError {}
/** The client is closed (or closed while waiting). */
export class ClientClosed extends WsproxyError {}
/** No connection to a relay within sendTimeout (a send) or at all (connect). */
export class NotConnected extends WsproxyError {}
/** The relay said the member a message or request was addressed to is not there. */
export class MemberNotFound extends WsproxyError {
  constructor(message, memberId) {
    super(message);
    this.memberId = memberId;
  }
}
/** The relay closed the connection with a code the client does not reconnect after. */
export class ClosedByRelay extends WsproxyError {
  constructor(code, reason) {
    super(`the relay closed the connection: ${code} (${CLOSE_MEANINGS[code] ?? "no meaning known"})${reason ? `: ${reason}` : ""}`);
    this.code = code;
    this.reason = reason;
  }
}

/** The relay refused to join a group (`code`: not_allowed, banned, already_joined,
 * bad_group_name, group_limit, group_full, relay_full, unavailable); the connection goes
 * on in the groups it was in. */
export class JoinRefused extends WsproxyError {
  constructor(code, group, detail) {
    super(`could not join group ${JSON.stringify(group)}: ${code}: ${detail}`);
    this.code = code;
    this.group = group;
    this.detail = detail;
  }
}
/** A message for a group this client is not in (it left it, or was removed). */
export class NotInGroup extends WsproxyError {
  constructor(group) {
    super(`not in group ${JSON.stringify(group)}; nothing was sent`);
    this.group = group;
  }
}

/** The error codes by which the relay refuses a join (docs/protocol.md). */
export const JOIN_REFUSALS = Object.freeze([
  "refused", "not_allowed", "banned", "already_joined", "bad_group_name",
  "group_limit", "group_full", "relay_full", "unavailable",
]);

// -- the envelope (the .NET library's JSON shape) -------------------------------------------

/** The text frame for a typed message: keys in the .NET order, compact. */
export function encodeEnvelope(messageType, value, { id = null, replyId = null } = {}) {
  if (typeof messageType !== "string" || !messageType) {
    throw new TypeError("a message type is a non-empty string, e.g. \"System.String\"");
  }
  return JSON.stringify({
    Id: id,
    MessageType: messageType,
    Message: value === undefined ? null : value,
    ReplyId: replyId,
  });
}

/** `text` parsed as a JSON object; else the error `fail(why)` makes is thrown, `why` being
 * `notJson` (not JSON at all) or `notObject` (JSON, but not an object). */
function jsonObject(text, fail, notJson, notObject = notJson) {
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw fail(notJson);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw fail(notObject);
  }
  return parsed;
}

/** `{messageType, value, id, replyId}` of a text frame; EnvelopeError if it is not one.
 * Strict where .NET is strict (an object, MessageType a non-empty string, Id and ReplyId
 * strings or null), lenient where it is (missing fields read as null, unknown keys are
 * ignored). */
export function decodeEnvelope(text) {
  const parsed = jsonObject(text, (why) => new EnvelopeError(why), "not JSON", "not a JSON object");
  const messageType = parsed.MessageType;
  if (typeof messageType !== "string" || !messageType) {
    throw new EnvelopeError("MessageType is not a non-empty string");
  }
  for (const key of ["Id", "ReplyId"]) {
    if (parsed[key] != null && typeof parsed[key] !== "string") {
      throw new EnvelopeError(`${key} is not a string or null`);
    }
  }
  return {
    messageType,
    value: parsed.Message === undefined ? null : parsed.Message,
    id: parsed.Id ?? null,
    replyId: parsed.ReplyId ?? null,
  };
}

// -- what a .NET member can read --------------------------------------------------------------

/** Guid.Empty: the ReplyId .NET's ReplyToAsync writes when the message answered had no Id;
 * every receiver takes such a message for an ordinary one. */
export const EMPTY_GUID = "00000000-0000-0000-0000-000000000000";

/** The .NET runtime version written into generic type names until the client learns its
 * group's (option dotnetVersion pins one). */
export const DOTNET_RUNTIME_VERSION = "8.0.0.0";

const D_FORMAT = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const CORELIB_VERSION = /(System\.Private\.CoreLib, Version=)([^,\]]*)/g;
const LIST_OF = "System.Collections.Generic.List`1[[";
const INTEGER_RANGES = {
  "System.Byte": [0n, 2n ** 8n],
  "System.SByte": [-(2n ** 7n), 2n ** 7n],
  "System.Int16": [-(2n ** 15n), 2n ** 15n],
  "System.UInt16": [0n, 2n ** 16n],
  "System.Int32": [-(2n ** 31n), 2n ** 31n],
  "System.UInt32": [0n, 2n ** 32n],
  "System.Int64": [-(2n ** 63n), 2n ** 63n],
  "System.UInt64": [0n, 2n ** 64n],
};

/** Whether a .NET member can read `id` as an Id or ReplyId: a GUID in the D format
 * (8-4-4-4-12 hex digits), the only one System.Text.Json reads. */
export function isDotnetGuid(id) {
  return typeof id === "string" && D_FORMAT.test(id);
}

/** A .NET generic type name without the assembly qualifiers of its arguments, so that a
 * name written by any .NET runtime version matches: List`1[[System.String, System.Private.
 * CoreLib, Version=7.0.0.0, ...]] becomes List`1[[System.String]]. */
export function normalizeTypeName(name) {
  return name.replace(/,[^[\]]*\]/g, "]");
}

/** The runtime version a generic type name was written by ("7.0.0.0"), or null. */
export function runtimeVersionOf(name) {
  const found = new RegExp(CORELIB_VERSION.source).exec(name);
  return found ? found[2] : null;
}

/** `name` with the core library version of its generic arguments set to `version`. */
export function withRuntimeVersion(name, version) {
  return name.replace(CORELIB_VERSION, (_, prefix) => prefix + version);
}

/** The full name .NET gives a generic type of core library types: dotnetGenericName(
 * "System.Collections.Generic.List`1", ["System.String"]) is typeof(List<string>).FullName
 * on .NET 8 (the client writes its group's version when it sends it). */
export function dotnetGenericName(definition, args, { version = DOTNET_RUNTIME_VERSION } = {}) {
  const corelib = `System.Private.CoreLib, Version=${version}, Culture=neutral, PublicKeyToken=7cec85d7bea7798e`;
  return `${definition}[${args.map((arg) => `[${arg}, ${corelib}]`).join(",")}]`;
}

function checkInteger(value, what, [low, high]) {
  if (typeof value !== "number" && typeof value !== "bigint") return;
  if (typeof value === "number" && !Number.isInteger(value)) {
    throw new RangeError(`${value} is not an integer, so not a ${what}: a .NET member would drop its connection reading it`);
  }
  const big = BigInt(value);
  if (big < low || big >= high) {
    const hint = what === "System.Int32" && big >= INTEGER_RANGES["System.Int64"][0] && big < INTEGER_RANGES["System.Int64"][1] ? '; send it as "System.Int64"' : "";
    throw new RangeError(`${value} does not fit a ${what} (${low}..${high - 1n}): a .NET member would overflow reading it and drop its connection${hint}`);
  }
}

/** Check a typed message against what a .NET member can receive, before it is sent:
 * throws (TypeError, RangeError) for what would drop every .NET member's connection — a
 * top-level System.Guid (a Guid field of an object is fine), an integer outside the range
 * of the integer type it is named as (System.Int32, ..., List<> of them) — and returns a
 * warning for what a .NET member drops without a word (a null or "" Message), else null. */
export function checkSendable(messageType, value) {
  if (messageType === "System.Guid") {
    throw new TypeError(
      "a top-level System.Guid cannot be received by a .NET member (it reads primitives with Convert, which has no Guid, and drops its connection): send it as a System.String, or as a field of an object",
    );
  }
  const range = INTEGER_RANGES[messageType];
  if (range) checkInteger(value, messageType, range);
  else if (messageType.startsWith(LIST_OF) && Array.isArray(value)) {
    const element = normalizeTypeName(messageType).slice(LIST_OF.length, -2);
    const elementRange = INTEGER_RANGES[element];
    if (elementRange) for (const item of value) checkInteger(item, `List<${element}> element`, elementRange);
  }
  if (value === null || value === undefined || value === "") {
    return `a ${messageType} message whose Message is ${value === "" ? '""' : "null"}: a .NET member drops it without a word (a reply too: its request times out)`;
  }
  return null;
}

/** The canonical spelling of a GUID (lower case, hyphenated); other ids unchanged. .NET
 * may echo an Id back in any GUID spelling. */
export function normalizeMessageId(id) {
  const hex = id.replace(/^[{(]|[})]$/g, "").replaceAll("-", "");
  if (/^[0-9a-fA-F]{32}$/.test(hex)) {
    const h = hex.toLowerCase();
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }
  return id;
}

/** A fresh random (version 4) GUID, as .NET and the Python client put in Id. */
export function newMessageId() {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes); // (randomUUID needs a secure context)
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// -- wsproxy.v1: header line, then the payload ----------------------------------------------

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** The header line (with its line feed) a member puts before its payload: to every other
 * member, or to member `to`; of `group` (null: the group the URL named). */
export function memberHeader(to = null, group = null) {
  if (to == null && group == null) return "\n";
  const body = {};
  if (group != null) body.group = group;
  if (to != null) body.to = to;
  return `${JSON.stringify(body)}\n`;
}

/** The v1 message carrying `payload` (a string, or bytes as a Uint8Array) to the group or
 * to member `to`, in `group` (null: the URL's): text stays text, binary stays binary. */
export function frameFor(payload, to = null, group = null) {
  const header = memberHeader(to, group);
  if (typeof payload === "string") return header + payload;
  const head = encoder.encode(header);
  const out = new Uint8Array(head.length + payload.byteLength);
  out.set(head, 0);
  out.set(payload, head.length);
  return out;
}

/** The whole message (a header line alone) that joins `group`; `since` ("EPOCH:OFFSET"):
 * the last position seen in it, to get what came after. */
export function joinFrame(group, since = null) {
  return `${JSON.stringify(since == null ? { join: group } : { join: group, since })}\n`;
}

/** The whole message (a header line alone) that leaves `group`. */
export function leaveFrame(group) {
  return `${JSON.stringify({ leave: group })}\n`;
}

/** The whole message (a header line alone) that hands the relay a new access token. */
export function tokenFrame(token) {
  return `${JSON.stringify({ token })}\n`;
}

/** What a relay's v1 message says — `{kind: "from", sender, direct, offset, group}` or an
 * event `{kind: "welcome" | "presence" | "members" | "error" | "left", ...}` — and its
 * payload: a string for a text message, a Uint8Array for a binary one. `group` is null
 * for the group the URL named. V1Error for anything else. */
export function decodeRelayMessage(data) {
  let line;
  let payload;
  if (typeof data === "string") {
    const end = data.indexOf("\n");
    if (end < 0) throw new V1Error("no header line");
    line = data.slice(0, end);
    payload = data.slice(end + 1);
  } else {
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
    const end = bytes.indexOf(0x0a);
    if (end < 0) throw new V1Error("no header line");
    try {
      line = decoder.decode(bytes.subarray(0, end));
    } catch {
      throw new V1Error("the header is not a JSON object");
    }
    payload = bytes.subarray(end + 1);
  }
  const header = jsonObject(line, (why) => new V1Error(why), "the header is not a JSON object");
  return { header: relayHeader(header), payload };
}

function relayHeader(header) {
  const group = header.group == null ? null : string(header.group);
  if ("from" in header) {
    const sender = header.from;
    if (sender !== null && typeof sender !== "string") {
      throw new V1Error('"from" must be a string or null');
    }
    const offset = header.offset == null ? null : count(header.offset);
    return { kind: "from", sender, direct: header.direct === true, offset, group };
  }
  const kind = header.event;
  const need = (key) => {
    if (!(key in header)) throw new V1Error(`a ${kind} event needs '${key}'`);
    return header[key];
  };
  switch (kind) {
    case "welcome":
      return {
        kind,
        id: string(need("id")),
        group: string(need("group")),
        members: ids(need("members")),
        count: count(need("count")),
        position: position(header.position),
        recovery: recovery(header.recovery),
        info: infos(header.info),
      };
    case "presence":
      return {
        kind,
        joined: strings(need("joined")),
        left: strings(need("left")),
        count: count(need("count")),
        group,
        info: infos(header.info),
      };
    case "members":
      return { kind, members: ids(need("members")), count: count(need("count")), group, info: infos(header.info) };
    case "error":
      return {
        kind,
        error: string(need("error")),
        detail: string(need("detail")),
        to: header.to == null ? null : string(header.to),
        group,
        status: header.status == null ? null : count(header.status),
      };
    case "left":
      return { kind, group: string(need("group")), reason: header.reason == null ? null : string(header.reason) };
    case "token_expiring":
    case "token_refreshed":
      return { kind, exp: count(need("exp")) };
    default:
      throw new V1Error(`unknown event ${JSON.stringify(kind)}`);
  }
}

function string(value) {
  if (typeof value !== "string") throw new V1Error(`expected a string, got ${JSON.stringify(value)}`);
  return value;
}
function strings(value) {
  if (!Array.isArray(value)) throw new V1Error(`expected a list of strings, got ${JSON.stringify(value)}`);
  return value.map(string);
}
function ids(value) {
  return value === null ? null : strings(value);
}
function infos(value) {
  if (value == null) return null;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new V1Error(`expected members' info by id, got ${JSON.stringify(value)}`);
  }
  return value;
}
function count(value) {
  if (!Number.isInteger(value) || value < 0) throw new V1Error(`expected a count, got ${JSON.stringify(value)}`);
  return value;
}
function position(value) {
  if (value == null) return null;
  if (typeof value !== "object") throw new V1Error("a position is an object");
  if (!("epoch" in value) || !("offset" in value)) throw new V1Error("a position needs epoch and offset");
  return { epoch: string(value.epoch), offset: count(value.offset) };
}
function recovery(value) {
  if (value == null) return null;
  if (typeof value !== "object" || typeof value.recovered !== "boolean") {
    throw new V1Error("a recovery is an object with a boolean recovered");
  }
  if (value.recovered) return { recovered: true, missed: count(value.missed ?? 0), reason: null };
  return { recovered: false, missed: 0, reason: string(value.reason) };
}

// -- URLs and backoff ------------------------------------------------------------------------

/** The URL a member joins with: `url` with `id` and `groupName` (and `access_token`,
 * `since`) in its query. */
export function connectionUrl(url, { group, id, accessToken = null, since = null }) {
  const parsed = new URL(url);
  if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
    throw new TypeError(`the relay URL must start with ws:// or wss://, got ${url}`);
  }
  const query = parsed.searchParams;
  for (const [key, given] of [["groupName", group], ["id", id]]) {
    const inUrl = query.get(key);
    if (given != null && inUrl && inUrl !== given) {
      throw new TypeError(`${key}=${inUrl} in the URL contradicts ${given}; give it once`);
    }
    if (given != null) query.set(key, given);
  }
  if (!query.get("groupName")) throw new TypeError("no group: pass {group} or put groupName in the URL");
  if (accessToken != null) query.set("access_token", accessToken);
  if (since != null) query.set("since", since);
  return parsed.toString();
}

/** Exponential backoff: `min * 2**attempt` capped at `max` (ms), shortened by a random
 * fraction up to `jitter`, so that clients dropped together do not all come back at once. */
export function reconnectDelay(attempt, { min = 500, max = 30000, jitter = 0.5, random = Math.random } = {}) {
  const base = Math.min(max, min * 2 ** attempt);
  return base * (1 - jitter * random());
}


// -- the client ------------------------------------------------------------------------------

/** Binary data to send as bytes (a Uint8Array over the same memory where possible). */
async function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (typeof Blob !== "undefined" && data instanceof Blob) return new Uint8Array(await data.arrayBuffer());
  throw new TypeError("binary data is an ArrayBuffer, a typed array, a DataView or a Blob");
}

/** One received message: its value, envelope fields, sender, its offset in the group's
 * history (null without one), and the means to answer. */
export class Incoming {
  constructor(group, { value, messageType = null, id = null, replyId = null, sender = null, direct = false, offset = null }) {
    this.value = value;
    this.messageType = messageType;
    this.id = id;
    this.replyId = replyId;
    this.sender = sender;
    this.direct = direct;
    this.offset = offset;
    // The Group it came in (the Client, for its URL's group): a reply goes there.
    Object.defineProperty(this, "_group", { value: group, enumerable: false });
  }
  /** Whether its sender waits for an answer (sent it with request). */
  get wantsReply() {
    return this.id !== null;
  }
  /** Answer it: to its sender only over wsproxy.v1, else to the group (as .NET does). A
   * message sent without an Id is answered as .NET's ReplyToAsync answers it, with ReplyId
   * Guid.Empty (EMPTY_GUID), which every receiver takes for an ordinary message. */
  reply(messageType, value) {
    if (this.messageType === null) {
      throw new WsproxyError("a binary message has no envelope, so there is nothing to reply to");
    }
    const replyId = this.id === null ? EMPTY_GUID : normalizeMessageId(this.id);
    const { frame, name } = this._group.client._typed(messageType, value, { replyId });
    return this._group._send(frame, this.sender, true, { messageType: name, value, replyId });
  }
}

const BINARY = Symbol("binary");

// The events that come in order with the messages, held with them until the first
// handler or listener (see Group._hold).
const HELD_EVENTS = new Set(["resumed", "joined", "left", "deliveryfailed"]);

/** `since` as given to connect or join: "EPOCH:OFFSET" (a position, saved), or null. */
function checkPosition(since) {
  if (since == null) return null;
  if (typeof since !== "string" || !/^.+:[0-9]+$/.test(since)) {
    throw new TypeError(`since is a position, "EPOCH:OFFSET" (what client.position gives), got ${JSON.stringify(since)}`);
  }
  return since;
}

/** The epoch and offset of a position "EPOCH:OFFSET". */
function splitPosition(position) {
  const at = position.lastIndexOf(":");
  return { epoch: position.slice(0, at), offset: Number(position.slice(at + 1)) };
}

/** One group a client is in, over the client's one connection: who is there, where the
 * client is in the group's history, the handlers of its messages, and sending to it. The
 * Client is the Group its URL named; `client.join(name)` gives the others (wsproxy.v1).
 * An EventTarget: "joined", "left" (a member), "resumed", "deliveryfailed", and "removed"
 * (the relay took this client out of the group: the application's back end removed it, or
 * a join again after a reconnect was refused). */
export class Group extends EventTarget {
  constructor(client, name, since = null) {
    super();
    // (The Client is a Group itself, its URL's: it passes null.)
    Object.defineProperty(this, "client", { value: client ?? this, enumerable: false });
    if (client !== null) this.id = client.id;
    /** The group's name. */
    this.group = name;
    /** The other members' ids (wsproxy.v1; empty on a plain relay). */
    this.members = new Set();
    /** How many members the group has, this one included (null: unknown). */
    this.memberCount = null;
    /** What the application's back end gave the other members (its connect hook's
     * `info`), by id: those it gave one (wsproxy.v1). */
    this.memberInfo = new Map();
    // Whether the relay has this client in the group: "joining", "joined", "leaving" (a
    // leave asked, not yet answered) or "out".
    this._status = client === null ? "joined" : "joining";
    // Where the connection is in the group's history, as read: named when (re)joining.
    this._since = checkPosition(since);
    // Where the application is: the last message handed out ({epoch, offset} or null).
    this._handed = null;
    // Until the first handler or listener: what came in, in order (see _hold).
    this._holding = true;
    this._releasing = false;
    this._held = [];
    this._handlers = new Map();
    this._welcomes = 0;
    // What ends this group's message iterators when the client leaves it.
    this._stops = new Set();
    // leave()'s promise and its resolve, while a leave is under way.
    this._leaving = null;
    // Whether the relay took the client out of the group (rather than it leaving).
    this._removed = false;
  }

  /** Where this client is in the group's history, "EPOCH:OFFSET": the last message handed
   * to handlers (in a handler, the one it handles), or the welcome's position before any;
   * null before the welcome, or without history. Save it, and give it back as
   * connect(url, {since}) (the URL's group) or join(name, {since}) to get every message
   * after it. */
  get position() {
    return this._handed === null ? null : `${this._handed.epoch}:${this._handed.offset}`;
  }

  /** Leave the group (wsproxy.v1): resolves once the relay says this client is out of it;
   * nothing of the group is handed out after that. The Client leaves its URL's group so
   * and stays connected, in the groups it joined. */
  leave() {
    return this.client._leave(this);
  }

  // -- receiving --------------------------------------------------------------------------

  /** Call `handler(value, incoming)` with every message of `messageType` (a .NET type
   * name, e.g. "System.String"); returns a function that removes it. */
  on(messageType, handler) {
    const key = handlerKey(messageType);
    const list = this._handlers.get(key) ?? [];
    list.push(handler);
    this._handlers.set(key, list);
    this._release();
    return () => this.off(messageType, handler);
  }
  /** EventTarget's, and a listener of an event that comes in order with the messages
   * (resumed, joined, left, deliveryfailed) ends the hold as a handler does. */
  addEventListener(type, listener, options) {
    super.addEventListener(type, listener, options);
    if (HELD_EVENTS.has(type)) this._release();
  }
  off(messageType, handler) {
    const list = this._handlers.get(handlerKey(messageType)) ?? [];
    const index = list.indexOf(handler);
    if (index < 0) throw new Error("not a handler of that type");
    list.splice(index, 1);
  }
  /** Call `handler(data, incoming)` with every binary message (an ArrayBuffer). */
  onBinary(handler) {
    return this.on(BINARY, handler);
  }
  /** The messages of `messageType` (or binary ones: `messages(null)`), as an async iterator
   * of Incoming; it ends when the client closes, when it leaves the group, or on
   * `return()`. */
  messages(messageType) {
    const client = this.client;
    const key = messageType ?? BINARY;
    const queue = [];
    let wake = null;
    let done = false;
    const handler = (_value, incoming) => {
      queue.push(incoming);
      wake?.();
    };
    const stop = () => {
      if (!done) {
        done = true;
        this.off(key, handler);
        client.removeEventListener("state", onState);
        this._stops.delete(stop);
        wake?.();
      }
    };
    const onState = () => {
      if (client.closed) stop();
    };
    this.on(key, handler);
    client.addEventListener("state", onState);
    this._stops.add(stop);
    return {
      [Symbol.asyncIterator]() {
        return this;
      },
      async next() {
        while (!queue.length && !done) await new Promise((resolve) => (wake = resolve));
        wake = null;
        if (queue.length) return { value: queue.shift(), done: false };
        return { value: undefined, done: true };
      },
      async return() {
        stop();
        return { value: undefined, done: true };
      },
    };
  }

  // -- sending ----------------------------------------------------------------------------

  /** Send `value` as a typed message of `messageType` to every other member. */
  send(messageType, value) {
    const { frame, name } = this.client._typed(messageType, value);
    return this._send(frame, null, false, { messageType: name, value });
  }
  /** Send binary data (ArrayBuffer, typed array, Blob) to every other member. */
  async sendBinary(data) {
    const bytes = await toBytes(data);
    return this._send(bytes, null, false, { value: bytes });
  }
  /** Send a typed message to the member `memberId` only (wsproxy.v1). */
  sendTo(memberId, messageType, value) {
    this._checkPresent(memberId);
    const { frame, name } = this.client._typed(messageType, value);
    return this._send(frame, memberId, false, { messageType: name, value });
  }
  /** Send binary data to the member `memberId` only (wsproxy.v1). */
  async sendBinaryTo(memberId, data) {
    this._checkPresent(memberId);
    const bytes = await toBytes(data);
    return this._send(bytes, memberId, false, { value: bytes });
  }
  /** Send `value` with a fresh Id and resolve to the value of the first message whose
   * ReplyId is that Id; reject with RequestTimeout after `timeout` ms (default
   * requestTimeout), MemberNotFound if `to` is not there. */
  request(messageType, value, { timeout = this.client.options.requestTimeout, to = null } = {}) {
    if (to !== null) this._checkPresent(to);
    const pendingRequests = this.client._pending;
    const id = newMessageId();
    const { frame } = this.client._typed(messageType, value, { id });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        pendingRequests.delete(id);
        reject(new RequestTimeout(`no reply to the ${messageType} request within ${timeout} ms`));
      }, timeout);
      pendingRequests.set(id, { resolve, reject, timer, to, group: this });
      this._send(frame, to, false, { messageType, value, id }).catch((error) => {
        clearTimeout(timer);
        pendingRequests.delete(id);
        reject(error);
      });
    });
  }

  _checkPresent(memberId) {
    if (typeof memberId !== "string" || !memberId) throw new TypeError("a member id is a non-empty string");
    if (this.client.protocol === SUBPROTOCOL && this.memberCount !== null && !this.members.has(memberId)) {
      throw new MemberNotFound(`no member ${JSON.stringify(memberId)} in group ${JSON.stringify(this.group)}; nothing was sent`, memberId);
    }
  }

  _send(payload, to, orGroup = false, note = {}) {
    return this.client._write(this, payload, to, orGroup, note);
  }

  // -- what comes in ----------------------------------------------------------------------

  /** Take the group's welcome (a connection's first, for the URL's group, or the answer to
   * a join); returns what announces it to the application, to call once whoever waits for
   * the group has it. */
  _welcomed(event) {
    const first = this._welcomes === 0;
    this._welcomes += 1;
    if (this._status === "joining") this._status = "joined"; // (a leave asked meanwhile stands)
    const recovered = event.recovery?.recovered && event.position !== null && this._since !== null;
    if (!recovered) this._since = event.position ? `${event.position.epoch}:${event.position.offset}` : null;
    this._moveTo(this._since);
    const changes = this._replaceMembers(event);
    return () => {
      if (event.recovery) this._emit("resumed", event.recovery);
      if (!first) changes(); // (the first welcome fills the list, as in Python)
    };
  }

  _presence(event) {
    this.memberCount = event.count;
    for (const id of event.joined) {
      if (id !== this.client.id && !this.members.has(id)) {
        this.members.add(id);
        const info = event.info?.[id] ?? null;
        if (info !== null) this.memberInfo.set(id, info);
        this._emit("joined", { id, info });
      }
    }
    for (const id of event.left) {
      if (this.members.delete(id)) {
        this.memberInfo.delete(id);
        this._emit("left", { id });
      }
    }
  }

  /** Take a member list afresh (a welcome's, or a members event's); returns what
   * announces the difference to the one held, as joined and left events. */
  _replaceMembers(event) {
    const was = this.members;
    this.members = new Set((event.members ?? []).filter((id) => id !== this.client.id));
    this.memberCount = event.members === null ? null : event.count;
    this.memberInfo = new Map(Object.entries(event.info ?? {}).filter(([id]) => this.members.has(id)));
    return () => {
      for (const id of was) if (!this.members.has(id)) this._emit("left", { id });
      for (const id of this.members) {
        if (!was.has(id)) this._emit("joined", { id, info: this.memberInfo.get(id) ?? null });
      }
    };
  }

  /** A member's message in this group (wsproxy.v1). */
  _from(header, payload) {
    if (header.offset !== null && this._since !== null) {
      this._since = `${splitPosition(this._since).epoch}:${header.offset}`;
    }
    if (header.sender !== null && this.memberCount !== null && !this.members.has(header.sender)) {
      this.members.add(header.sender);
    }
    if (!this._payload(typeof payload === "string" ? payload : copy(payload), header)) {
      this._passed(header.offset); // an answer to a request, a bad message
    }
  }

  /** The client is out of the group; `removed` ({reason, error}) when the relay took it
   * out rather than answering a leave. */
  _out(removed) {
    this._status = "out";
    this._removed = Boolean(removed);
    this.members = new Set();
    this.memberCount = null;
    const leaving = this._leaving;
    this._leaving = null;
    leaving?.resolve();
    for (const stop of [...this._stops]) stop();
    if (removed) this._event("removed", { group: this.group, ...removed });
  }

  /** Hand a member's message on: to a waiting request, or to the handlers; returns
   * whether it went to the handlers. */
  _payload(data, { sender, direct, offset }) {
    const client = this.client;
    if (typeof data !== "string") {
      this._deliver(BINARY, new Incoming(this, { value: data, sender, direct, offset }));
      return true;
    }
    let envelope;
    try {
      envelope = decodeEnvelope(data);
    } catch (error) {
      client._bad(error.message === "not JSON" ? "invalid_json" : "invalid_envelope", error.message, data);
      return false;
    }
    for (const [key, id] of [["Id", envelope.id], ["ReplyId", envelope.replyId]]) {
      if (id !== null && !isDotnetGuid(id)) {
        client._bad("invalid_envelope", `${key} ${JSON.stringify(id)} is not a GUID (8-4-4-4-12 hex digits): a .NET member drops its connection on it, so it is neither read nor answered`, data);
        return false;
      }
    }
    if (envelope.value === null || envelope.value === "") {
      // .NET drops such a message (an answer included) without a word, and the Python
      // client reports it: neither hands it to a handler, nor does this client.
      client._bad("bad_payload", `Message is ${envelope.value === null ? "null" : '""'}: a .NET member drops it without a word, so it is not handed out`, data);
      return false;
    }
    if (client._learnedVersion === null && client.options.dotnetVersion == null) {
      client._learnedVersion = runtimeVersionOf(envelope.messageType);
    }
    // (ReplyId Guid.Empty answers a message sent without an Id: an ordinary message.)
    if (envelope.replyId !== null && envelope.replyId !== EMPTY_GUID) {
      // Requests are keyed by their ids' canonical spelling (newMessageId writes it).
      const key = normalizeMessageId(envelope.replyId);
      const pending = client._pending.get(key);
      if (pending) {
        clearTimeout(pending.timer);
        client._pending.delete(key);
        pending.resolve(envelope.value);
        return false;
      }
    }
    this._deliver(envelope.messageType, new Incoming(this, { ...envelope, sender, direct, offset }));
    return true;
  }

  // -- held until the first handler ---------------------------------------------------------
  //
  // connect() resolves once the client is welcomed, and a relay keeping history sends the
  // messages a client named by `since` missed right after the welcome: in Node, in the
  // same read as the welcome, before the code after `await connect(...)` runs (so too
  // after `await client.join(name, {since})`). So until the first handler or listener is
  // registered on a group (on, onBinary, messages, or a listener of resumed, joined, left,
  // deliveryfailed), its messages and those events are held, in order, up to holdLimit of
  // them; then handed out — in a microtask, so that every handler registered in the same
  // run of code is in place first. Past holdLimit they are handed out as they come (to
  // nobody: a client that only sends goes on as before).

  /** Hold a message or event, or hand it out now. */
  _hold(item) {
    if (!this._holding) return false;
    this._held.push(item);
    if (this._held.length >= this.client.options.holdLimit) this._flush();
    return true;
  }

  _release() {
    if (this._holding && !this._releasing) {
      this._releasing = true;
      queueMicrotask(() => this._flush());
    }
  }

  _flush() {
    if (!this._holding) return;
    this._holding = false;
    const held = this._held;
    this._held = [];
    for (const item of held) this._handOut(item);
  }

  _handOut(item) {
    if (item.event !== undefined) this._event(item.event, item.detail);
    else if (item.move !== undefined) this._handed = item.move === null ? null : splitPosition(item.move);
    else if (item.offset !== undefined) this._passedNow(item.offset);
    else this._handTo(item.key, item.incoming);
  }

  _event(name, detail) {
    this.dispatchEvent(Object.assign(new Event(name), { detail }));
  }

  /** An event that comes in order with the messages. */
  _emit(name, detail) {
    if (!this._hold({ event: name, detail })) this._event(name, detail);
  }

  /** The connection is at `position` ("EPOCH:OFFSET" or null): so is the application
   * once what came before is handed out. */
  _moveTo(position) {
    if (this._holding && this._held.length) this._held.push({ move: position });
    else this._handed = position === null ? null : splitPosition(position);
  }

  /** A message with `offset` that the handlers do not get (a request's answer, a bad
   * message): the application's position passes it in its turn. */
  _passed(offset) {
    if (offset === null) return;
    if (!this._hold({ offset })) this._passedNow(offset);
  }

  _passedNow(offset) {
    if (offset !== null && this._handed !== null) this._handed = { epoch: this._handed.epoch, offset };
  }

  _deliver(key, incoming) {
    if (!this._hold({ key, incoming })) this._handTo(key, incoming);
  }

  _handTo(key, incoming) {
    this._passedNow(incoming.offset); // (in its handlers, the position is this message's)
    const handlers = this._handlers.get(handlerKey(key));
    if (!handlers?.length) {
      this.client.stats.unhandled += 1;
      return;
    }
    for (const handler of [...handlers]) {
      try {
        const result = handler(incoming.value, incoming);
        if (result && typeof result.catch === "function") {
          result.catch((error) => this.client._bad("handler", String(error?.message ?? error), null));
        }
      } catch (error) {
        this.client._bad("handler", String(error?.message ?? error), null);
      }
    }
  }
}

/** A client of a relay, over one connection, and the group its URL named (see connect):
 * the Client is that Group; join(name) adds others (wsproxy.v1). It is an EventTarget:
 * its group's events, and the connection's: "state", "badmessage", "disconnected". */
export class Client extends Group {
  constructor(urls, options = {}) {
    const list = Array.isArray(urls) ? urls : [urls];
    if (!list.length) throw new TypeError("at least one relay URL");
    super(null, options.group ?? new URL(list[0]).searchParams.get("groupName"), options.since ?? null);
    // The URL may name the id, as the .NET-style URL does (?id=ID&groupName=GROUP).
    this.id = options.id ?? (new URL(list[0]).searchParams.get("id") || newMessageId());
    this.urls = list.map((url) => connectionUrl(url, { group: this.group, id: this.id }));
    this.options = {
      v1: true,
      reconnect: true,
      reconnectCodes: DEFAULT_RECONNECT_CODES,
      reconnectMinDelay: 500,
      reconnectMaxDelay: 30000,
      reconnectJitter: 0.5,
      maxReconnectAttempts: null,
      connectTimeout: 10000,
      sendTimeout: 10000,
      requestTimeout: 30000,
      accessToken: null,
      unconfirmedLimit: 256,
      unconfirmedBytes: 1024 * 1024,
      holdLimit: 1000,
      since: null,
      dotnetVersion: null,
      WebSocket: globalThis.WebSocket,
      ...options,
    };
    if (typeof this.options.WebSocket !== "function") {
      throw new TypeError("no WebSocket here: pass {WebSocket} (in Node 20, the ws package's)");
    }
    /** "connecting", "connected", "reconnecting" or "closed". */
    this.state = "connecting";
    /** The subprotocol of the connection now: "wsproxy.v1", or null (plain). */
    this.protocol = null;
    this.urlIndex = 0;
    this.stats = { messagesSent: 0, messagesReceived: 0, unhandled: 0, badMessages: 0, connects: 0, disconnects: 0, unconfirmed: 0 };
    this._pending = new Map();
    // The groups this client is in (its URL's included while it is in it), by name...
    this._groups = new Map([[this.group, this]]);
    // ...and those it asked to join: name -> {group, resolve, reject} (no promise: a join
    // again after a reconnect).
    this._joining = new Map();
    this._ws = null;
    this._connected = null;
    this._closing = false;
    this._failedRounds = 0;
    this._timer = null;
    // What was handed to the connection in use, reported if it is lost (see _note).
    this._sent = newSentLog();
    // The .NET runtime version of generic type names, once learned from the group.
    this._learnedVersion = null;
  }

  /** The groups this client is in, by name: Group objects, the Client itself for its
   * URL's group (until it leaves it). */
  get groups() {
    return this._groups;
  }

  /** The .NET runtime version written into generic type names: the dotnetVersion option,
   * else the one learned from the first generic name a member sent, else null (names go as
   * given: dotnetGenericName writes DOTNET_RUNTIME_VERSION). */
  get dotnetVersion() {
    return this.options.dotnetVersion ?? this._learnedVersion;
  }

  /** The frame of a typed message, its name for the group's .NET runtime, after the
   * checks of checkSendable. */
  _typed(messageType, value, ids = {}) {
    if (typeof messageType !== "string" || !messageType) {
      throw new TypeError("a message type is a non-empty string, e.g. \"System.String\"");
    }
    const version = this.dotnetVersion;
    const name = version === null ? messageType : withRuntimeVersion(messageType, version);
    const warning = checkSendable(name, value);
    if (warning !== null) console.warn(`wsproxy: sending ${warning}`);
    return { frame: encodeEnvelope(name, value, ids), name };
  }

  get url() {
    return this.urls[this.urlIndex];
  }
  get connected() {
    return this.state === "connected";
  }
  get closed() {
    return this.state === "closed";
  }

  // -- many groups on one connection ------------------------------------------------------

  /** Join the group `name` too, on this connection (wsproxy.v1): resolves to its Group
   * once the relay welcomed this client in it — a relay keeping history then sends what
   * came after `since` (a position saved from group.position) — and rejects with
   * JoinRefused (`code`, `group`, `detail`) when the relay refuses; the connection goes on
   * in its other groups either way. After a reconnect, the client joins again every group
   * it is in, each from its own position. */
  async join(name, { since = null } = {}) {
    if (typeof name !== "string" || !name) throw new TypeError("a group name is a non-empty string");
    checkPosition(since);
    if (!this._usable()) await this._ready("nobody was joined");
    if (this.protocol !== SUBPROTOCOL) {
      throw new WsproxyError(`the relay at ${this.url} does not speak ${SUBPROTOCOL}, so this client is in its URL's group only`);
    }
    if (this._groups.has(name) || this._joining.has(name)) {
      throw new JoinRefused("already_joined", name, "this client is in the group, or joining it, already");
    }
    const group = name === this.group ? this : new Group(this, name);
    group._status = "joining";
    group._removed = false;
    group._since = since;
    return new Promise((resolve, reject) => {
      this._joining.set(name, { group, resolve, reject });
      this._ws.send(joinFrame(name, since));
    });
  }

  _leave(group) {
    if (group._status === "out") return Promise.resolve();
    if (this.closed || this._closing) return Promise.reject(new ClientClosed("the client is closed"));
    if (this.connected && this.protocol !== SUBPROTOCOL) {
      return Promise.reject(new WsproxyError(`the relay at ${this.url} does not speak ${SUBPROTOCOL}: a plain connection leaves its group by closing`));
    }
    if (!group._leaving) {
      let resolve;
      const promise = new Promise((done) => (resolve = done));
      group._leaving = { promise, resolve };
      group._status = "leaving";
      // Not connected: the next connection does not join it again (see _rejoin).
      if (this._usable()) this._ws.send(leaveFrame(group.group));
    }
    return group._leaving.promise;
  }

  /** On a new connection, welcomed in its URL's group: join again every other group this
   * client is in or was joining, each from its own position; a leave under way is done
   * (the new connection is not in that group), except the URL's group's, asked again. */
  _rejoin() {
    if (this._status === "leaving" || this._status === "out") {
      // (Left: the URL's group, which every connection joins, is left again.)
      this._status = "leaving";
      this._ws.send(leaveFrame(this.group));
    }
    for (const [name, group] of [...this._groups]) {
      if (group === this) continue;
      if (group._status === "leaving") {
        this._groups.delete(name);
        group._out(null);
        continue;
      }
      group._status = "joining";
      this._joining.set(name, { group, resolve: null, reject: null });
    }
    for (const [name, { group }] of this._joining) {
      if (group !== this) this._ws.send(joinFrame(name, group._since));
    }
  }

  /** On a plain connection (a relay that does not speak wsproxy.v1): the client is in its
   * URL's group only, and out of every other. */
  _plain() {
    for (const { reject } of this._joining.values()) {
      reject?.(new WsproxyError(`the relay at ${this.url} does not speak ${SUBPROTOCOL}, so this client is in its URL's group only`));
    }
    this._joining.clear();
    for (const [name, group] of [...this._groups]) {
      if (group === this) continue;
      this._groups.delete(name);
      group._out({ reason: `the relay does not speak ${SUBPROTOCOL}`, error: null });
    }
  }

  // -- sending ----------------------------------------------------------------------------

  /** Whether there is a connection to write to now. (A socket the relay is closing still
   * looks connected until its close event; what is sent on it then would be dropped by
   * the browser without a word.) */
  _usable() {
    return this._ws !== null && this.state === "connected" && this._ws.readyState === 1;
  }

  /** Wait up to sendTimeout for a connection in use. */
  async _ready(what = "nothing was sent") {
    const deadline = Date.now() + this.options.sendTimeout;
    while (!this._usable()) {
      if (this.closed || this._closing) throw new ClientClosed(`the client is closed; ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new NotConnected(`not connected to the relay for ${this.options.sendTimeout} ms; ${what}`);
      await this._stateChange(left);
    }
  }

  /** Write `payload` (string or Uint8Array) to `group` on the connection in use, waiting
   * up to sendTimeout for one; `note` is what the application sent ({messageType, value,
   * id, replyId}), kept for the report should the connection be lost. */
  async _write(group, payload, to, orGroup = false, note = {}) {
    const out = () => group._status === "leaving" || group._status === "out";
    if (out()) throw new NotInGroup(group.group);
    if (!this._usable()) {
      // (Written at once when connected: what is sent in one run of code goes in order.)
      await this._ready();
      if (out()) throw new NotInGroup(group.group);
    }
    const v1 = this.protocol === SUBPROTOCOL;
    if (to !== null && !v1 && !orGroup) {
      throw new WsproxyError(`the relay at ${this.url} does not speak ${SUBPROTOCOL}, so it cannot send to one member; nothing was sent`);
    }
    // A message without "group" is the URL's group's, always (also after a leave and a join).
    const name = group === this ? null : group.group;
    this._ws.send(v1 ? frameFor(payload, to, name) : payload);
    this.stats.messagesSent += 1;
    this._note({ ...note, group: name }, v1 ? to : null, typeof payload === "string" ? payload.length : payload.byteLength);
  }

  /** Keep a message just handed to the socket for the report should the connection be
   * lost: the relay confirms no message to its sender (see docs/javascript.md). The
   * newest are kept, at most unconfirmedLimit of them holding at most unconfirmedBytes;
   * older ones (and one larger than that) are only counted. */
  _note(note, to, size) {
    const log = this._sent;
    log.count += 1;
    const { unconfirmedLimit: limit, unconfirmedBytes: maxBytes } = this.options;
    if (limit <= 0 || size > maxBytes) return;
    log.kept.push({
      messageType: note.messageType ?? null,
      value: note.value ?? null,
      id: note.id ?? null,
      replyId: note.replyId ?? null,
      to,
      group: note.group ?? null,
      size,
      sentAt: Date.now(),
    });
    log.bytes += size;
    while (log.kept.length > limit || log.bytes > maxBytes) log.bytes -= log.kept.shift().size;
  }

  _stateChange(timeout) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.removeEventListener("state", done);
        resolve();
      };
      const timer = setTimeout(done, timeout);
      this.addEventListener("state", done);
    });
  }

  /** Bytes handed to the WebSocket and not yet sent (to show a big message's progress). */
  get bufferedAmount() {
    return this._ws?.bufferedAmount ?? 0;
  }

  // -- the connection's life --------------------------------------------------------------

  /** Close the connection (1000) and stop: no reconnecting. */
  close() {
    if (this.closed) return Promise.resolve();
    this._closing = true;
    clearTimeout(this._timer);
    const ws = this._ws;
    return new Promise((resolve) => {
      if (!ws || ws.readyState >= 2) {
        this._finish(null);
        resolve();
        return;
      }
      const timer = setTimeout(() => {
        this._finish(null);
        resolve();
      }, 5000);
      ws.addEventListener("close", () => {
        clearTimeout(timer);
        resolve();
      });
      ws.close(1000);
    });
  }

  _setState(state, detail = {}) {
    this.state = state;
    this.dispatchEvent(Object.assign(new Event("state"), { detail: { state, ...detail } }));
  }

  /** Connect (the first time): resolves once connected (and welcomed, over v1). */
  _start() {
    return new Promise((resolve, reject) => {
      this._connected = { resolve, reject };
      this._round([...this.urls.keys()]);
    });
  }

  _order() {
    const n = this.urls.length;
    return Array.from({ length: n }, (_, i) => (this.urlIndex + 1 + i) % n);
  }

  /** Try each URL of `order` once; after a failed round, back off and try another. */
  async _round(order) {
    const failures = [];
    for (const index of order) {
      if (this._closing) return;
      const outcome = await this._attempt(index);
      if (outcome.connected) return; // its close starts the next round
      failures.push(`${this.urls[index]}: ${outcome.reason}`);
    }
    if (this._connected) {
      const pending = this._connected;
      this._connected = null;
      this._finish(null);
      pending.reject(new NotConnected(`could not connect: ${failures.join("; ")}`));
      return;
    }
    this._failedRounds += 1;
    const limit = this.options.maxReconnectAttempts;
    if (limit !== null && this._failedRounds >= limit) {
      this._finish(new NotConnected(`gave up reconnecting after ${this._failedRounds} attempts: ${failures.join("; ")}`));
      return;
    }
    this._schedule();
  }

  _schedule() {
    const delay = reconnectDelay(this._failedRounds, {
      min: this.options.reconnectMinDelay,
      max: this.options.reconnectMaxDelay,
      jitter: this.options.reconnectJitter,
    });
    this._setState("reconnecting", { delay });
    this._timer = setTimeout(() => this._round(this._order()), delay);
  }

  /** One connection attempt to URL `index`; resolves `{connected}` once it is welcomed
   * (then its close drives what follows), or `{connected: false, reason}`. */
  async _attempt(index) {
    let token = this.options.accessToken;
    if (typeof token === "function") token = await token();
    const url = connectionUrl(this.urls[index], { group: this.group, id: this.id, accessToken: token, since: this._status === "leaving" || this._status === "out" ? null : this._since });
    const WebSocketClass = this.options.WebSocket;
    return new Promise((resolve) => {
      let settled = false;
      let ws;
      try {
        ws = this.options.v1 ? new WebSocketClass(url, [SUBPROTOCOL]) : new WebSocketClass(url);
      } catch (error) {
        resolve({ connected: false, reason: String(error.message ?? error) });
        return;
      }
      ws.binaryType = "arraybuffer";
      const timer = setTimeout(() => {
        if (!settled) {
          settled = true;
          ws.close();
          resolve({ connected: false, reason: `no connection within ${this.options.connectTimeout} ms` });
        }
      }, this.options.connectTimeout);
      // `before`: what is written on the connection before anything the application
      // sends once it is connected (the joins again of the other groups).
      const ready = (before = null) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (this._closing) {
          // close() was called while this attempt was under way.
          ws.close(1000);
          resolve({ connected: false, reason: "the client closed" });
          return;
        }
        this.urlIndex = index;
        this._ws = ws;
        this._sent = newSentLog();
        this._failedRounds = 0;
        this.stats.connects += 1;
        before?.();
        this._setState("connected", { url: this.urls[index], protocol: this.protocol });
        if (this._connected) {
          const pending = this._connected;
          this._connected = null;
          pending.resolve(this);
        }
        resolve({ connected: true });
      };
      ws.addEventListener("open", () => {
        this.protocol = ws.protocol === SUBPROTOCOL ? SUBPROTOCOL : null;
        if (this.protocol === null) {
          this._since = null;
          this._moveTo(null);
          this.members = new Set();
          this.memberCount = null;
          this._plain();
          ready();
        }
      });
      ws.addEventListener("message", (event) => {
        try {
          this._take(event.data, ready);
        } catch (error) {
          this._bad("handler", String(error?.message ?? error), event.data);
        }
      });
      ws.addEventListener("error", () => {
        // Before the connection opened: refused or unreachable (a browser does not say
        // which, nor the HTTP status). Some WebSockets fire no close event then.
        if (!settled) {
          settled = true;
          clearTimeout(timer);
          resolve({ connected: false, reason: "the connection failed (refused, or nobody answered)" });
        }
      });
      ws.addEventListener("close", (event) => {
        clearTimeout(timer);
        if (!settled) {
          settled = true;
          resolve({ connected: false, reason: `closed with ${event.code}${event.reason ? ` (${event.reason})` : ""}` });
          return;
        }
        this._closedAfterOpen(ws, event.code, event.reason);
      });
    });
  }

  _closedAfterOpen(ws, code, reason) {
    if (this._ws !== ws) return;
    this._ws = null;
    // Requests stay pending: their answers may come on the next connection (recovered),
    // else their timeouts reject them.
    if (this._closing) {
      this._finish(null);
      return;
    }
    this.stats.disconnects += 1;
    const reconnecting = this.options.reconnect && this.options.reconnectCodes.includes(code);
    // Every message handed to the lost connection: the relay confirms none, so any of
    // them may be missing from the group (and its history).
    const sent = this._sent;
    this._sent = newSentLog();
    this.stats.unconfirmed += sent.count;
    this._event("disconnected", { code, reason, reconnecting, unconfirmed: sent.count, unconfirmedMessages: sent.kept });
    if (!reconnecting) {
      this._finish(new ClosedByRelay(code, reason));
      return;
    }
    this._schedule();
  }

  _finish(error) {
    clearTimeout(this._timer);
    for (const pending of this._pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new ClientClosed("the client closed before the answer came"));
    }
    this._pending.clear();
    for (const { reject } of this._joining.values()) reject?.(new ClientClosed("the client closed before the relay answered the join"));
    this._joining.clear();
    for (const group of this._groups.values()) group._leaving?.resolve();
    this._ws = null;
    this._setState("closed", { error });
  }


  // -- what comes in ----------------------------------------------------------------------

  _take(data, ready) {
    if (this.protocol !== SUBPROTOCOL) {
      this.stats.messagesReceived += 1;
      this._payload(data, { sender: null, direct: false, offset: null });
      return;
    }
    let decoded;
    try {
      decoded = decodeRelayMessage(data);
    } catch (error) {
      this._bad("invalid_header", error.message, data);
      return;
    }
    const { header, payload } = decoded;
    if (header.kind !== "from") {
      this._relayEvent(header, ready);
      return;
    }
    this.stats.messagesReceived += 1;
    const group = this._groupOf(header.group);
    if (group === null) {
      this._bad("unknown_group", `a message of group ${JSON.stringify(header.group ?? this.group)}, which this client is not in`, typeof payload === "string" ? payload : null);
      return;
    }
    group._from(header, payload);
  }

  /** The group a message or event names (null: the URL's), if this client is in it. */
  _groupOf(name) {
    const group = name === null ? this : this._groups.get(name);
    return group !== undefined && (group._status === "joined" || group._status === "leaving") ? group : null;
  }

  _relayEvent(event, ready) {
    switch (event.kind) {
      case "welcome":
        this._welcome(event, ready);
        return;
      case "presence":
        this._groupOf(event.group)?._presence(event);
        return;
      case "members": {
        const group = this._groupOf(event.group);
        if (group !== null) group._replaceMembers(event)();
        return;
      }
      case "error":
        this._error(event);
        return;
      case "token_expiring":
        // The connection's token ends at event.exp: a function `accessToken` gives the
        // new one, sent in place (a fixed token cannot be renewed: the relay closes
        // with 4006 at expiry).
        this._event("tokenexpiring", { exp: event.exp });
        if (typeof this.options.accessToken === "function") {
          const ws = this._ws;
          Promise.resolve()
            .then(() => this.options.accessToken())
            .then((token) => {
              if (this._ws === ws && token) ws.send(tokenFrame(token));
            })
            .catch(() => {});
        }
        return;
      case "token_refreshed":
        this._event("tokenrefreshed", { exp: event.exp });
        return;
      case "left": {
        const group = event.group === this.group ? this : this._groups.get(event.group);
        if (group === undefined || group._status === "out") return;
        const asked = group._status === "leaving" && event.reason === null;
        if (this._groups.get(event.group) === group) this._groups.delete(event.group);
        group._out(asked ? null : { reason: event.reason ?? "the relay took this client out of the group", error: null });
        return;
      }
    }
  }

  _welcome(event, ready) {
    if (this.state !== "connected") {
      // A connection's first message: the welcome to the group its URL named.
      const pending = this._joining.get(this.group);
      this._joining.delete(this.group);
      // The URL's group the relay took the client out of (it did not leave it) is the
      // client's again when a new connection's URL lets it in, as in the Python client.
      if (this._status === "out" && this._removed) this._status = "joining";
      if (this._status === "leaving" || this._status === "out") {
        ready(() => this._rejoin());
        return;
      }
      const announce = this._welcomed(event);
      this._groups.set(this.group, this);
      ready(() => this._rejoin());
      pending?.resolve?.(this);
      announce();
      return;
    }
    const pending = this._joining.get(event.group);
    if (pending === undefined) {
      this._bad("invalid_header", `a welcome to group ${JSON.stringify(event.group)}, which this client did not ask to join`, null);
      return;
    }
    this._joining.delete(event.group);
    const { group } = pending;
    const announce = group._welcomed(event);
    this._groups.set(event.group, group);
    pending.resolve?.(group);
    announce();
  }

  _error(event) {
    const name = event.group ?? this.group;
    const pending = this._joining.get(name);
    if (pending !== undefined && JOIN_REFUSALS.includes(event.error)) {
      this._joining.delete(name);
      const { group } = pending;
      if (pending.reject) {
        group._status = "out";
        pending.reject(new JoinRefused(event.error, name, event.detail));
      } else {
        // A join again after a reconnect: the client is no longer in the group.
        this._groups.delete(name);
        group._out({ reason: event.detail, error: event.error });
      }
      return;
    }
    const group = this._groupOf(event.group) ?? this;
    if (event.error === "no_such_member" && event.to !== null) {
      for (const [id, request] of this._pending) {
        if (request.to === event.to && request.group === group) {
          clearTimeout(request.timer);
          this._pending.delete(id);
          request.reject(new MemberNotFound(event.detail, event.to));
        }
      }
    }
    group._emit("deliveryfailed", event);
  }

  _bad(kind, reason, data) {
    this.stats.badMessages += 1;
    const text = typeof data === "string" ? data : null;
    this._event("badmessage", { kind, reason, text });
  }
}

/** Handlers of a type name are kept under its name without assembly qualifiers: a
 * generic name matches whatever .NET runtime version wrote it. */
function handlerKey(messageType) {
  return typeof messageType === "string" ? normalizeTypeName(messageType) : messageType;
}

function newSentLog() {
  return { count: 0, kept: [], bytes: 0 };
}

function copy(bytes) {
  // The payload after the header, as its own ArrayBuffer.
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
}

/** Connect to a relay and join a group: resolves to the connected Client (welcomed, over
 * wsproxy.v1), rejects with NotConnected if no URL answers. `url` may be a list of the
 * nodes of one cluster. `client.join(name)` joins more groups on the same connection. */
export async function connect(url, options = {}) {
  const client = new Client(url, options);
  return client._start();
}
