// Many groups on one connection (docs/protocol.md, "Many groups on one connection"): the
// client's join, its groups' messages and events kept apart, leave, a refused join, and
// joining every group again from its own position after a reconnect. On a stand-in
// WebSocket that records what the client writes: no relay needed.
//   node --test clients/js/test/

import assert from "node:assert/strict";
import { test as nodeTest } from "node:test";

import { connect, Group, JoinRefused, NotInGroup } from "../wsproxy.js";

const EPOCH = "9f86d081884c7d65";
// (A client that waits for what never comes fails its test instead of hanging the run.)
const test = (name, body) => nodeTest(name, { timeout: 5000 }, body);

/** A WebSocket stand-in: the test opens it, feeds it the relay's messages, drops it. */
class StandIn extends EventTarget {
  static made = [];
  static waiting = [];
  constructor(url, protocols) {
    super();
    this.url = new URL(url);
    this.protocols = protocols;
    this.readyState = 0;
    this.protocol = "";
    this.sent = [];
    StandIn.made.push(this);
    for (const wake of StandIn.waiting.splice(0)) wake();
  }
  /** The next socket the client makes (the n-th, counting from 0). */
  static async nth(n) {
    while (StandIn.made.length <= n) await new Promise((wake) => StandIn.waiting.push(wake));
    return StandIn.made[n];
  }
  send(data) {
    this.sent.push(data);
  }
  close(code = 1000) {
    this.drop(code);
  }
  open() {
    this.readyState = 1;
    this.protocol = "wsproxy.v1";
    this.dispatchEvent(new Event("open"));
  }
  /** The relay says `header` (and `payload`). */
  feed(header, payload = "") {
    this.dispatchEvent(Object.assign(new Event("message"), { data: `${JSON.stringify(header)}\n${payload}` }));
  }
  drop(code) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.dispatchEvent(Object.assign(new Event("close"), { code, reason: "" }));
  }
  /** What the client wrote, header lines parsed: [header, payload]. */
  get written() {
    return this.sent.map((data) => {
      if (typeof data !== "string") return ["binary", data];
      const end = data.indexOf("\n");
      return [end === 0 ? {} : JSON.parse(data.slice(0, end)), data.slice(end + 1)];
    });
  }
}

const say = (text) => JSON.stringify({ Id: null, MessageType: "System.String", Message: text, ReplyId: null });
const welcome = (group, members, offset, more = {}) => ({
  event: "welcome", id: "me", group, members: ["me", ...members], count: members.length + 1,
  position: { epoch: EPOCH, offset }, ...more,
});

/** A client connected over a stand-in, welcomed in "lobby" with ann there. */
async function connected() {
  StandIn.made = [];
  const pending = connect("ws://relay/ws?groupName=lobby", {
    WebSocket: StandIn, id: "me", reconnectMinDelay: 1, reconnectJitter: 0,
  });
  const socket = await StandIn.nth(0);
  socket.open();
  socket.feed(welcome("lobby", ["ann"], 3));
  return { client: await pending, socket };
}

/** Join `name` over `socket`, the relay answering with `answer` (and what follows). */
async function joined(client, socket, name, answer, ...then) {
  const joining = client.join(name);
  await new Promise((resolve) => setImmediate(resolve)); // (join awaits nothing when connected)
  assert.deepEqual(socket.written.at(-1), [{ join: name }, ""]);
  socket.feed(answer);
  for (const [header, payload] of then) socket.feed(header, payload);
  return joining;
}

test("a joined group has its own members, position, messages and events; the client stays its URL's group", async () => {
  const { client, socket } = await connected();
  const room = await joined(client, socket, "room-2", welcome("room-2", ["bob", "cy"], 10));
  assert.ok(room instanceof Group);
  assert.equal(room.group, "room-2");
  assert.equal(room.id, "me");
  assert.deepEqual([...client.groups.keys()], ["lobby", "room-2"]);
  assert.equal(client.groups.get("lobby"), client);
  assert.equal(client.groups.get("room-2"), room);
  assert.deepEqual([...room.members].sort(), ["bob", "cy"]);
  assert.deepEqual([...client.members], ["ann"]);
  assert.equal(room.position, `${EPOCH}:10`);
  assert.equal(client.position, `${EPOCH}:3`);

  const got = [];
  client.on("System.String", (value, incoming) => got.push(["lobby", value, incoming.sender]));
  room.on("System.String", (value, incoming) => got.push(["room-2", value, incoming.sender, incoming.direct]));
  room.addEventListener("joined", (event) => got.push(["room-2 joined", event.detail.id]));
  room.addEventListener("left", (event) => got.push(["room-2 left", event.detail.id]));
  client.addEventListener("joined", (event) => got.push(["lobby joined", event.detail.id]));
  await Promise.resolve();
  socket.feed({ from: "bob", group: "room-2", offset: 11 }, say("in room 2"));
  socket.feed({ from: "ann", offset: 4 }, say("in the lobby"));
  socket.feed({ from: "cy", group: "room-2", direct: true, offset: 12 }, say("just you"));
  socket.feed({ event: "presence", group: "room-2", joined: ["dee"], left: ["bob"], count: 3 });
  socket.feed({ event: "presence", joined: ["eve"], left: [], count: 3 });
  assert.deepEqual(got, [
    ["room-2", "in room 2", "bob", false],
    ["lobby", "in the lobby", "ann"],
    ["room-2", "just you", "cy", true],
    ["room-2 joined", "dee"],
    ["room-2 left", "bob"],
    ["lobby joined", "eve"],
  ]);
  assert.equal(room.position, `${EPOCH}:12`);
  assert.equal(client.position, `${EPOCH}:4`);
  assert.deepEqual([...room.members].sort(), ["cy", "dee"]);
  assert.deepEqual([...client.members].sort(), ["ann", "eve"]);
  await client.close();
});

test("what a group sends names it; what the URL's group sends names none", async () => {
  const { client, socket } = await connected();
  const room = await joined(client, socket, "room-2", welcome("room-2", ["bob"], 0));
  socket.sent.length = 0;
  await room.send("System.String", "to room 2");
  await room.sendTo("bob", "System.String", "to bob in room 2");
  await room.sendBinary(new Uint8Array([1, 2]));
  await client.send("System.String", "to the lobby");
  assert.deepEqual(socket.written.slice(0, 2), [
    [{ group: "room-2" }, say("to room 2")],
    [{ group: "room-2", to: "bob" }, say("to bob in room 2")],
  ]);
  assert.deepEqual([...socket.sent[2]], [...new TextEncoder().encode('{"group":"room-2"}\n'), 1, 2]);
  assert.equal(socket.sent[3], `\n${say("to the lobby")}`);
  assert.throws(() => room.sendTo("ann", "System.String", "ann is in the lobby only"), { name: "MemberNotFound" });
  await client.close();
});

test("a refused join rejects with the relay's code, group and detail, and the connection goes on", async () => {
  const { client, socket } = await connected();
  const refused = joined(client, socket, "room-9", {
    event: "error", error: "not_allowed", detail: "access token does not allow this group", group: "room-9",
  });
  await assert.rejects(refused, (error) => {
    assert.ok(error instanceof JoinRefused);
    assert.deepEqual([error.code, error.group, error.detail], ["not_allowed", "room-9", "access token does not allow this group"]);
    return true;
  });
  assert.deepEqual([...client.groups.keys()], ["lobby"]);
  assert.equal(client.connected, true);
  await assert.rejects(client.join("lobby"), (error) => error instanceof JoinRefused && error.code === "already_joined");
  await client.close();
});

test("a leave is answered by left: nothing of the group after it, and nothing can be sent to it", async () => {
  const { client, socket } = await connected();
  const room = await joined(client, socket, "room-2", welcome("room-2", ["bob"], 0));
  const got = [];
  room.on("System.String", (value) => got.push(value));
  const iterator = room.messages("System.String");
  const leaving = room.leave();
  assert.deepEqual(socket.written.at(-1), [{ leave: "room-2" }, ""]);
  await assert.rejects(room.send("System.String", "too late"), NotInGroup);
  socket.feed({ from: "bob", group: "room-2", offset: 1 }, say("before the left"));
  socket.feed({ event: "left", group: "room-2" });
  await leaving;
  socket.feed({ from: "bob", group: "room-2", offset: 2 }, say("after the left"));
  assert.deepEqual(got, ["before the left"]);
  assert.deepEqual([...client.groups.keys()], ["lobby"]);
  assert.equal((await iterator.next()).value.value, "before the left");
  assert.equal((await iterator.next()).done, true);
  await client.close();
});

test("a group the back end removed this client from says so with the reason", async () => {
  const { client, socket } = await connected();
  const room = await joined(client, socket, "room-2", welcome("room-2", ["bob"], 0));
  const removed = new Promise((resolve) => room.addEventListener("removed", (event) => resolve(event.detail)));
  socket.feed({ event: "left", group: "room-2", reason: "removed from the group by the application's back end" });
  assert.deepEqual(await removed, {
    group: "room-2", reason: "removed from the group by the application's back end", error: null,
  });
  assert.equal(client.groups.has("room-2"), false);
  await client.close();
});

test("the URL's group can be left and joined again; its messages never name it", async () => {
  const { client, socket } = await connected();
  const leaving = client.leave();
  assert.deepEqual(socket.written.at(-1), [{ leave: "lobby" }, ""]);
  socket.feed({ event: "left", group: "lobby" });
  await leaving;
  assert.deepEqual([...client.groups.keys()], []);
  assert.equal(client.connected, true);
  const again = await joined(client, socket, "lobby", welcome("lobby", ["ann"], 9));
  assert.equal(again, client);
  assert.equal(client.groups.get("lobby"), client);
  const got = [];
  client.on("System.String", (value) => got.push(value));
  await Promise.resolve();
  socket.feed({ from: "ann", offset: 10 }, say("back in the lobby"));
  assert.deepEqual(got, ["back in the lobby"]);
  await client.close();
});

test("what a join recovers waits for the handlers registered after it resolves", async () => {
  const { client, socket } = await connected();
  const joining = client.join("room-2", { since: `${EPOCH}:40` });
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(socket.written.at(-1), [{ join: "room-2", since: `${EPOCH}:40` }, ""]);
  // The welcome and what was missed, all before the code after `await join` runs.
  socket.feed(welcome("room-2", ["bob"], 42, { recovery: { recovered: true, missed: 2 } }));
  socket.feed({ from: "bob", group: "room-2", offset: 41 }, say("forty-one"));
  socket.feed({ from: "bob", group: "room-2", offset: 42 }, say("forty-two"));
  const room = await joining;
  const got = [];
  room.addEventListener("resumed", (event) => got.push(event.detail));
  room.on("System.String", (value, incoming) => got.push([value, room.position]));
  await Promise.resolve();
  assert.deepEqual(got, [
    { recovered: true, missed: 2, reason: null },
    ["forty-one", `${EPOCH}:41`],
    ["forty-two", `${EPOCH}:42`],
  ]);
  await client.close();
});

test("after a reconnect the client joins every group again from its own position", async () => {
  const { client, socket } = await connected();
  const room = await joined(client, socket, "room-2", welcome("room-2", ["bob"], 5));
  const gone = await joined(client, socket, "room-3", welcome("room-3", [], 0));
  const got = [];
  room.on("System.String", (value) => got.push(value));
  room.addEventListener("resumed", (event) => got.push(event.detail));
  room.addEventListener("joined", (event) => got.push(`${event.detail.id} joined`));
  await Promise.resolve();
  socket.feed({ from: "bob", group: "room-2", offset: 6 }, say("six"));
  const leaving = gone.leave(); // unanswered when the connection drops
  socket.drop(1006);

  const again = await StandIn.nth(1);
  assert.equal(again.url.searchParams.get("since"), `${EPOCH}:3`);
  again.open();
  again.feed(welcome("lobby", ["ann"], 3, { recovery: { recovered: true, missed: 0 } }));
  assert.deepEqual(again.written, [[{ join: "room-2", since: `${EPOCH}:6` }, ""]]);
  await leaving; // (the new connection is not in room-3)
  assert.equal(client.groups.has("room-3"), false);
  assert.equal(client.groups.get("room-2"), room);
  // Sent before the group's welcome: written after the join, so the relay takes it in it.
  await room.send("System.String", "sent while joining again");
  assert.deepEqual(again.written.at(-1), [{ group: "room-2" }, say("sent while joining again")]);
  again.feed(welcome("room-2", ["bob", "cy"], 7, { recovery: { recovered: true, missed: 1 } }));
  again.feed({ from: "bob", group: "room-2", offset: 7 }, say("seven"));
  assert.deepEqual(got, ["six", { recovered: true, missed: 1, reason: null }, "cy joined", "seven"]);
  assert.equal(room.position, `${EPOCH}:7`);
  await client.close();
});

test("a join again refused after a reconnect removes the group, saying why", async () => {
  const { client, socket } = await connected();
  const room = await joined(client, socket, "room-2", welcome("room-2", [], 0));
  const removed = new Promise((resolve) => room.addEventListener("removed", (event) => resolve(event.detail)));
  socket.drop(1012);
  const again = await StandIn.nth(1);
  again.open();
  again.feed(welcome("lobby", [], 3));
  again.feed({ event: "error", error: "banned", detail: "kept out for a while", group: "room-2" });
  assert.deepEqual(await removed, { group: "room-2", reason: "kept out for a while", error: "banned" });
  assert.deepEqual([...client.groups.keys()], ["lobby"]);
  await client.close();
});

test("the report of a lost connection names each message's group", async () => {
  const { client, socket } = await connected();
  const room = await joined(client, socket, "room-2", welcome("room-2", [], 0));
  await room.send("System.String", "one");
  await client.send("System.String", "two");
  const lost = new Promise((resolve) => client.addEventListener("disconnected", (event) => resolve(event.detail)));
  socket.drop(1011);
  const { unconfirmedMessages } = await lost;
  assert.deepEqual(unconfirmedMessages.map((sent) => [sent.value, sent.group]), [["one", "room-2"], ["two", null]]);
  await client.close();
});

test("a no_such_member in one group fails the requests to that member there only", async () => {
  const { client, socket } = await connected();
  const room = await joined(client, socket, "room-2", welcome("room-2", ["bob"], 0));
  const there = room.request("System.String", "?", { to: "bob", timeout: 200 }).catch((error) => error.name);
  socket.feed({ event: "error", error: "no_such_member", detail: "no member 'bob' in group 'room-2'", to: "bob", group: "room-2" });
  assert.equal(await there, "MemberNotFound");
  await client.close();
});

test("after a reconnect the URL's group the client left is left again; one it was removed from is its own again", async () => {
  const { client, socket } = await connected();
  const leaving = client.leave();
  socket.feed({ event: "left", group: "lobby" });
  await leaving;
  socket.drop(1006);
  const again = await StandIn.nth(1);
  assert.equal(again.url.searchParams.get("since"), null);
  again.open();
  again.feed(welcome("lobby", ["ann"], 5));
  assert.deepEqual(again.written, [[{ leave: "lobby" }, ""]]);
  again.feed({ event: "left", group: "lobby" });
  assert.deepEqual([...client.groups.keys()], []);
  await client.close();

  const removedFrom = await connected();
  const removed = new Promise((resolve) => removedFrom.client.addEventListener("removed", (event) => resolve(event.detail)));
  removedFrom.socket.feed({ event: "left", group: "lobby", reason: "removed from the group by the application's back end" });
  assert.equal((await removed).group, "lobby");
  assert.deepEqual([...removedFrom.client.groups.keys()], []);
  removedFrom.socket.drop(1006);
  const back = await StandIn.nth(1);
  back.open();
  back.feed(welcome("lobby", ["ann"], 5));
  assert.deepEqual(back.written, []);
  assert.equal(removedFrom.client.groups.get("lobby"), removedFrom.client);
  assert.deepEqual([...removedFrom.client.members], ["ann"]);
  await removedFrom.client.close();
});

test("after a reconnect the joins go before anything sent when the client says it is connected", async () => {
  const { client, socket } = await connected();
  const room = await joined(client, socket, "room-2", welcome("room-2", [], 0));
  client.addEventListener("state", (event) => {
    if (event.detail.state === "connected") room.send("System.String", "at once");
  });
  socket.drop(1001);
  const again = await StandIn.nth(1);
  again.open();
  again.feed(welcome("lobby", [], 3));
  assert.deepEqual(again.written, [[{ join: "room-2", since: `${EPOCH}:0` }, ""], [{ group: "room-2" }, say("at once")]]);
  await client.close();
});

test("a relay that does not speak wsproxy.v1 has no other groups to join", async () => {
  StandIn.made = [];
  const pending = connect("ws://relay/ws?groupName=lobby", { WebSocket: StandIn, id: "me" });
  const socket = await StandIn.nth(0);
  socket.readyState = 1;
  socket.dispatchEvent(new Event("open")); // (protocol "": plain)
  const client = await pending;
  assert.equal(client.protocol, null);
  await assert.rejects(client.join("room-2"), (error) => error.name === "WsproxyError" && /does not speak/.test(error.message));
  assert.deepEqual([...client.groups.keys()], ["lobby"]);
  await client.close();
});

test("a function accessToken renews the token in place when the relay says it expires soon", async () => {
  StandIn.made = [];
  const tokens = ["first", "second"];
  const pending = connect("ws://relay/ws?groupName=lobby", {
    WebSocket: StandIn, id: "me", accessToken: async () => tokens.shift(),
  });
  const socket = await StandIn.nth(0);
  assert.equal(socket.url.searchParams.get("access_token"), "first");
  socket.open();
  socket.feed(welcome("lobby", ["ann"], 3));
  const client = await pending;
  const seen = [];
  client.addEventListener("tokenexpiring", (event) => seen.push(["expiring", event.detail.exp]));
  client.addEventListener("tokenrefreshed", (event) => seen.push(["refreshed", event.detail.exp]));
  socket.feed({ event: "token_expiring", exp: 1796650000 });
  while (socket.written.length === 0) await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(socket.written.at(-1), [{ token: "second" }, ""]);
  socket.feed({ event: "token_refreshed", exp: 1796653600 });
  assert.deepEqual(seen, [["expiring", 1796650000], ["refreshed", 1796653600]]);
  assert.equal(StandIn.made.length, 1); // (no reconnect)
  await client.close();
});
