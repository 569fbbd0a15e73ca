// A use of the client's public names, type-checked against wsproxy.d.ts by the suite
// (tsc --strict --noEmit, tests/test_js_client.py); never run.
import {
  ClientClosed,
  ClosedByRelay,
  connect,
  decodeEnvelope,
  decodeRelayMessage,
  checkSendable,
  DEFAULT_RECONNECT_CODES,
  dotnetGenericName,
  EMPTY_GUID,
  encodeEnvelope,
  frameFor,
  JOIN_REFUSALS,
  JoinRefused,
  joinFrame,
  leaveFrame,
  MemberNotFound,
  NotInGroup,
  RequestTimeout,
  SUBPROTOCOL,
  type Client,
  type Disconnected,
  type Group,
  type Removed,
  type Incoming,
  type MemberInfo,
  type SentMessage,
} from "../wsproxy.js";

interface SocketMessage {
  Message: string;
  ReplyRequired: boolean;
}

export async function example(): Promise<void> {
  const client: Client = await connect(["ws://127.0.0.1:8765/ws", "ws://127.0.0.1:8766/ws"], {
    group: "group_1",
    id: "alice",
    accessToken: async () => "token",
    reconnectCodes: DEFAULT_RECONNECT_CODES,
    requestTimeout: 5000,
    unconfirmedLimit: 100,
    unconfirmedBytes: 65536,
    since: sessionStorage.getItem("position"),
    holdLimit: 100,
    dotnetVersion: "7.0.0.0",
  });
  const lines = dotnetGenericName("System.Collections.Generic.List`1", ["System.String"]);
  await client.send(lines, ["a", "b"]);
  const warning: string | null = checkSendable("System.Int32", 3);
  console.log(warning, client.dotnetVersion, EMPTY_GUID);
  const saved: string | null = client.position;
  if (saved !== null) sessionStorage.setItem("position", saved);
  const off = client.on<SocketMessage>("SharedData.Models.SocketMessage", (value, incoming: Incoming<SocketMessage>) => {
    if (incoming.wantsReply) return incoming.reply("System.String", value.Message.toUpperCase());
    return undefined;
  });
  off();
  client.onBinary((data: ArrayBuffer, incoming) => console.log(data.byteLength, incoming.sender));
  await client.send("System.String", "hello");
  await client.sendBinary(new Uint8Array([1, 2, 3]));
  await client.sendBinary(new Blob(["bytes"]));
  await client.sendTo("bob", "System.Int32", 42);
  await client.sendBinaryTo("bob", new ArrayBuffer(8));
  try {
    const answer: number = await client.request<number>("System.Int32", 41, { timeout: 1000, to: "bob" });
    console.log(answer + 1);
  } catch (error) {
    if (error instanceof RequestTimeout || error instanceof MemberNotFound || error instanceof ClientClosed) {
      console.log(error.message);
    }
  }
  for await (const incoming of client.messages<string>("System.String")) {
    console.log(incoming.value.length, incoming.direct, incoming.offset);
    break;
  }
  client.addEventListener("state", (event) => console.log(event.type, client.state));
  client.addEventListener("disconnected", (event) => {
    const lost: Disconnected = (event as CustomEvent<Disconnected>).detail;
    const maybe: SentMessage[] = lost.unconfirmedMessages;
    console.log(lost.code, lost.unconfirmed - maybe.length, client.stats.unconfirmed);
    for (const sent of maybe) console.log(sent.messageType, sent.value, sent.id, sent.replyId, sent.to, sent.group, sent.size, sent.sentAt);
  });
  const members: Set<string> = client.members;
  console.log(members.size, client.memberCount, client.position, client.protocol === SUBPROTOCOL);
  const info: Map<string, MemberInfo> = client.memberInfo;
  console.log(info.get("alice")?.name);
  const frame: string = encodeEnvelope("System.String", "x", { id: null });
  console.log(decodeEnvelope(frame).messageType, frameFor(new Uint8Array(1), "bob").byteLength);
  const { header } = decodeRelayMessage('{"from":"a"}\nx');
  if (header.kind === "from") console.log(header.sender, header.offset, header.group);
  if (header.kind === "left") console.log(header.group, header.reason);
  // Many groups on one connection.
  try {
    const room: Group = await client.join("room-2", { since: sessionStorage.getItem("room-2") });
    room.on<string>("System.String", (text, incoming) => console.log(room.group, incoming.sender, text.length));
    room.addEventListener("removed", (event) => {
      const removed: Removed = (event as CustomEvent<Removed>).detail;
      console.log(removed.group, removed.reason, removed.error);
    });
    await room.send("System.String", "hello, room 2");
    await room.sendTo("bob", "System.String", "hi bob");
    const inRoom: Set<string> = room.members;
    console.log(inRoom.size, room.memberCount, room.position, room.client === client, room.id);
    for (const [name, group] of client.groups) console.log(name, group.position);
    await room.leave();
  } catch (error) {
    if (error instanceof JoinRefused) console.log(error.code, error.group, error.detail, JOIN_REFUSALS.includes(error.code));
    if (error instanceof NotInGroup) console.log(error.group);
  }
  console.log(joinFrame("room-2", "e:1"), leaveFrame("room-2"), frameFor("x", null, "room-2"));
  const failure: ClosedByRelay = new ClosedByRelay(4000, "replaced");
  console.log(failure.code);
  await client.close();
}
