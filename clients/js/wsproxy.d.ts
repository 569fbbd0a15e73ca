// Types of wsproxy.js, the trio_wsproxy client for browsers and Node.js 20+.

export const SUBPROTOCOL: "wsproxy.v1";
export const DEFAULT_RECONNECT_CODES: readonly number[];
export const CLOSE_MEANINGS: Readonly<Record<number, string>>;

export class WsproxyError extends Error {}
export class EnvelopeError extends WsproxyError {}
export class V1Error extends WsproxyError {}
export class RequestTimeout extends WsproxyError {}
export class ClientClosed extends WsproxyError {}
export class NotConnected extends WsproxyError {}
export class MemberNotFound extends WsproxyError {
  constructor(message: string, memberId: string);
  readonly memberId: string;
}
export class ClosedByRelay extends WsproxyError {
  constructor(code: number, reason: string | null);
  readonly code: number;
  readonly reason: string | null;
}
/** The relay refused a join; the connection goes on in the groups it was in. */
export class JoinRefused extends WsproxyError {
  constructor(code: JoinRefusal, group: string, detail: string);
  readonly code: JoinRefusal;
  readonly group: string;
  readonly detail: string;
}
/** A message for a group the client is not in (it left it, or was removed). */
export class NotInGroup extends WsproxyError {
  constructor(group: string);
  readonly group: string;
}
/** What the application's back end gave a member (its connect hook's `info`). */
export type MemberInfo = { [key: string]: unknown };
/** Members' info by id. */
export type MemberInfos = { [id: string]: MemberInfo };
export type JoinRefusal =
  | "refused"
  | "not_allowed"
  | "banned"
  | "already_joined"
  | "bad_group_name"
  | "group_limit"
  | "group_full"
  | "relay_full"
  | "unavailable";
/** The error codes by which the relay refuses a join. */
export const JOIN_REFUSALS: readonly JoinRefusal[];

export interface Envelope {
  messageType: string;
  value: unknown;
  id: string | null;
  replyId: string | null;
}
export function encodeEnvelope(
  messageType: string,
  value: unknown,
  fields?: { id?: string | null; replyId?: string | null },
): string;
export function decodeEnvelope(text: string): Envelope;
export function normalizeMessageId(id: string): string;
/** Guid.Empty: the ReplyId of an answer to a message sent without an Id. */
export const EMPTY_GUID: "00000000-0000-0000-0000-000000000000";
/** The .NET runtime version of generic type names until the group's is learned. */
export const DOTNET_RUNTIME_VERSION: string;
/** Whether a .NET member can read `id` as an Id/ReplyId (a D-format GUID). */
export function isDotnetGuid(id: unknown): boolean;
/** A generic type name without its arguments' assembly qualifiers (any runtime version). */
export function normalizeTypeName(name: string): string;
/** The runtime version a generic type name was written by, or null. */
export function runtimeVersionOf(name: string): string | null;
/** `name` with its core library version set to `version`. */
export function withRuntimeVersion(name: string, version: string): string;
/** typeof(Definition<Args...>).FullName for core library arguments. */
export function dotnetGenericName(
  definition: string,
  args: readonly string[],
  options?: { version?: string },
): string;
/** Throws for what would drop a .NET member's connection; a warning for what it drops. */
export function checkSendable(messageType: string, value: unknown): string | null;
export function newMessageId(): string;

/** `group`: null for the group the connection's URL named. */
export type RelayHeader =
  | { kind: "from"; sender: string | null; direct: boolean; offset: number | null; group: string | null }
  | {
      kind: "welcome";
      id: string;
      group: string;
      members: string[] | null;
      count: number;
      position: { epoch: string; offset: number } | null;
      recovery: Recovery | null;
      info: MemberInfos | null;
    }
  | {
      kind: "presence";
      joined: string[];
      left: string[];
      count: number;
      group: string | null;
      info: MemberInfos | null;
    }
  | {
      kind: "members";
      members: string[] | null;
      count: number;
      group: string | null;
      info: MemberInfos | null;
    }
  | {
      kind: "error";
      error: string;
      detail: string;
      to: string | null;
      group: string | null;
      /** "refused": the status the application's back end refused with. */
      status: number | null;
    }
  | { kind: "left"; group: string; reason: string | null };
export function memberHeader(to?: string | null, group?: string | null): string;
export function frameFor(payload: string, to?: string | null, group?: string | null): string;
export function frameFor(payload: Uint8Array, to?: string | null, group?: string | null): Uint8Array;
/** The message that joins `group` (from `since`, "EPOCH:OFFSET"). */
export function joinFrame(group: string, since?: string | null): string;
/** The message that leaves `group`. */
export function leaveFrame(group: string): string;
export function tokenFrame(token: string): string;
export function decodeRelayMessage(data: string | Uint8Array | ArrayBuffer): {
  header: RelayHeader;
  payload: string | Uint8Array;
};

export function connectionUrl(
  url: string,
  fields: { group?: string | null; id?: string | null; accessToken?: string | null; since?: string | null },
): string;
export function reconnectDelay(
  attempt: number,
  options?: { min?: number; max?: number; jitter?: number; random?: () => number },
): number;

export interface Recovery {
  recovered: boolean;
  missed: number;
  reason: string | null;
}

export interface ClientOptions {
  /** The group to join (else the URL's groupName). */
  group?: string;
  /** This member's id (else a fresh GUID). */
  id?: string;
  /** An access token, or a function giving one (called before each connection). */
  accessToken?: string | null | (() => string | Promise<string>);
  /** Offer the wsproxy.v1 subprotocol (default true). */
  v1?: boolean;
  reconnect?: boolean;
  reconnectCodes?: readonly number[];
  /** Milliseconds. */
  reconnectMinDelay?: number;
  reconnectMaxDelay?: number;
  reconnectJitter?: number;
  maxReconnectAttempts?: number | null;
  connectTimeout?: number;
  sendTimeout?: number;
  requestTimeout?: number;
  /** How many of the messages handed to a connection are kept (the newest) for the
   * `disconnected` event's report, should it be lost (default 256; 0: only counted). */
  unconfirmedLimit?: number;
  /** ... holding at most this many payload bytes (default 1 MiB). */
  unconfirmedBytes?: number;
  /** A position in the group's history, "EPOCH:OFFSET" (a `client.position` saved, by a
   * page before its reload, say): the first connection names it, and a relay keeping
   * history replays every message after it (see the `resumed` event). */
  since?: string | null;
  /** How many messages (and resumed, joined, left, deliveryfailed events) are held for
   * the first handler or listener (default 1000); past that they are handed out. */
  holdLimit?: number;
  /** The .NET runtime version written into generic type names ("7.0.0.0" for .NET 7);
   * null (default): learned from the first generic name a member of the group sends. */
  dotnetVersion?: string | null;
  /** The WebSocket class (default globalThis.WebSocket; in Node 20, the ws package's). */
  WebSocket?: unknown;
}

export type BinaryData = ArrayBuffer | ArrayBufferView | Blob;

export class Incoming<T = unknown> {
  readonly value: T;
  readonly messageType: string | null;
  readonly id: string | null;
  readonly replyId: string | null;
  readonly sender: string | null;
  readonly direct: boolean;
  /** Its offset in the group's history (wsproxy.v1, a relay keeping history), else null. */
  readonly offset: number | null;
  readonly wantsReply: boolean;
  reply(messageType: string, value: unknown): Promise<void>;
}

export type ClientState = "connecting" | "connected" | "reconnecting" | "closed";

/** A message handed to a connection that was then lost: the relay confirms no message to
 * its sender, so whether it reached the group is unknown. */
export interface SentMessage {
  /** Its .NET type name; null for a binary message. */
  messageType: string | null;
  /** The value sent; for a binary message its bytes, a Uint8Array over the data given. */
  value: unknown;
  /** The request's Id (request), else null. */
  id: string | null;
  /** The Id of the request it answered (incoming.reply), else null. */
  replyId: string | null;
  /** The member it was addressed to over wsproxy.v1 (sendTo, a reply), else null. */
  to: string | null;
  /** The group it was sent to: null for the URL's group. */
  group: string | null;
  /** Its payload's length: characters of the envelope, bytes of a binary message. */
  size: number;
  /** When it was handed to the socket (Date.now()). */
  sentAt: number;
}

/** The detail of the "disconnected" event. */
export interface Disconnected {
  code: number;
  reason: string;
  reconnecting: boolean;
  /** How many messages were handed to the lost connection: every one, unconfirmed. */
  unconfirmed: number;
  /** The newest of them, oldest first, within unconfirmedLimit and unconfirmedBytes. */
  unconfirmedMessages: SentMessage[];
}

/** The detail of a group's "removed" event: the relay took the client out of the group. */
export interface Removed {
  group: string;
  /** Why: the relay's reason (the application's back end), or a refusal's detail. */
  reason: string;
  /** The refusal's code when a join again after a reconnect was refused, else null. */
  error: JoinRefusal | null;
}

/** One group the client is in, over its one connection (the Client is its URL's group;
 * client.join(name) gives the others). Events: "joined", "left" ({id}: a member),
 * "resumed", "deliveryfailed", "removed" ({@link Removed}). */
export class Group extends EventTarget {
  readonly client: Client;
  /** This member's id (the connection's, in every group). */
  readonly id: string;
  /** The group's name. */
  readonly group: string;
  readonly members: Set<string>;
  readonly memberCount: number | null;
  /** What the application's back end gave the other members (its connect hook's
   * `info`), by id: those it gave one. A "joined" event carries it too ({id, info}). */
  readonly memberInfo: Map<string, MemberInfo>;
  /** "EPOCH:OFFSET": where the last message handed to the handlers is in the group's
   * history (the welcome's position before any); null before the welcome or without
   * history. Give it back as join(name, {since}) (connect(url, {since}) for the URL's). */
  readonly position: string | null;
  on<T = unknown>(messageType: string, handler: (value: T, incoming: Incoming<T>) => unknown): () => void;
  off(messageType: string, handler: (...args: any[]) => unknown): void;
  onBinary(handler: (data: ArrayBuffer, incoming: Incoming<ArrayBuffer>) => unknown): () => void;
  messages<T = unknown>(messageType: string | null): AsyncIterableIterator<Incoming<T>>;
  send(messageType: string, value: unknown): Promise<void>;
  sendBinary(data: BinaryData): Promise<void>;
  sendTo(memberId: string, messageType: string, value: unknown): Promise<void>;
  sendBinaryTo(memberId: string, data: BinaryData): Promise<void>;
  request<R = unknown>(
    messageType: string,
    value: unknown,
    options?: { timeout?: number; to?: string | null },
  ): Promise<R>;
  /** Leave the group: resolves once the relay says the client is out of it. */
  leave(): Promise<void>;
}

export class Client extends Group {
  readonly urls: string[];
  readonly url: string;
  readonly state: ClientState;
  readonly connected: boolean;
  readonly closed: boolean;
  readonly protocol: "wsproxy.v1" | null;
  /** The .NET runtime version written into generic type names, pinned or learned; null:
   * names go as given. */
  readonly dotnetVersion: string | null;
  readonly bufferedAmount: number;
  readonly stats: {
    messagesSent: number;
    messagesReceived: number;
    unhandled: number;
    badMessages: number;
    connects: number;
    disconnects: number;
    unconfirmed: number;
  };
  /** The groups the client is in, by name; the URL's is the Client itself. */
  readonly groups: ReadonlyMap<string, Group>;
  /** Join another group on this connection (wsproxy.v1); rejects with JoinRefused. */
  join(name: string, options?: { since?: string | null }): Promise<Group>;
  close(): Promise<void>;
}

export function connect(url: string | string[], options?: ClientOptions): Promise<Client>;
