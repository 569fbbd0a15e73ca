// Starting from a saved position, and nothing lost to timing: a client made with
// `since` names it, its position follows what it hands out, and what comes before the
// first handler or listener (a replay in the same read as the welcome, in Node) is held
// for it. On a stand-in socket: no relay needed.
//   node --test clients/js/test/

import assert from "node:assert/strict";
import { test } from "node:test";

import { Client, connectionUrl } from "../wsproxy.js";

const EPOCH = "9f86d081884c7d65";

/** A client over a stand-in v1 connection, and a function feeding it relay messages. */
function welcomed(options, welcome) {
  const client = new Client("ws://relay/ws?groupName=g", { WebSocket: class {}, id: "me", ...options });
  client.protocol = "wsproxy.v1";
  const feed = (header, payload = "") => client._take(`${JSON.stringify(header)}\n${payload}`, () => {
    client.stats.connects += 1;
  });
  feed({ event: "welcome", id: "me", group: "g", members: ["me", "ann"], count: 2, ...welcome });
  return { client, feed };
}

const say = (text) => JSON.stringify({ Id: null, MessageType: "System.String", Message: text, ReplyId: null });

test("a client made with since names it, and its position is null until a welcome", () => {
  const client = new Client("ws://relay/ws?groupName=g", { WebSocket: class {}, since: `${EPOCH}:7` });
  assert.equal(client.position, null);
  assert.equal(client._since, `${EPOCH}:7`);
  assert.match(connectionUrl(client.urls[0], { since: client._since }), /since=9f86d081884c7d65%3A7/);
  assert.throws(() => new Client("ws://relay/ws?groupName=g", { WebSocket: class {}, since: "7" }), TypeError);
});

test("a replay that comes with the welcome waits for the handlers registered after it", async () => {
  const { client, feed } = welcomed(
    { since: `${EPOCH}:7` },
    { position: { epoch: EPOCH, offset: 9 }, recovery: { recovered: true, missed: 2 } },
  );
  feed({ from: "ann", offset: 8 }, say("eight"));
  feed({ from: "ann", offset: 9 }, say("nine"));
  assert.equal(client.position, `${EPOCH}:7`); // nothing handed out yet
  const got = [];
  client.addEventListener("resumed", (event) => got.push(event.detail));
  client.on("System.String", (value, incoming) => got.push([value, incoming.offset, client.position]));
  assert.deepEqual(got, []); // handed out in a microtask, once every handler is in place
  await Promise.resolve();
  assert.deepEqual(got, [
    { recovered: true, missed: 2, reason: null },
    ["eight", 8, `${EPOCH}:8`],
    ["nine", 9, `${EPOCH}:9`],
  ]);
  feed({ from: "ann", offset: 10 }, say("live"));
  assert.deepEqual(got.at(-1), ["live", 10, `${EPOCH}:10`]);
  assert.equal(client.stats.unhandled, 0);
});

test("the first welcome announces nobody; a position that cannot be recovered moves on", async () => {
  const { client } = welcomed(
    { since: "old:3" },
    { position: { epoch: EPOCH, offset: 4 }, recovery: { recovered: false, reason: "epoch_changed" } },
  );
  const got = [];
  for (const name of ["joined", "resumed"]) client.addEventListener(name, (event) => got.push([name, event.detail]));
  await Promise.resolve();
  assert.deepEqual(got, [["resumed", { recovered: false, missed: 0, reason: "epoch_changed" }]]);
  assert.deepEqual([...client.members], ["ann"]);
  assert.equal(client.position, `${EPOCH}:4`);
});

test("the hold is bounded: past holdLimit, messages are handed out as they come", () => {
  const { client, feed } = welcomed({ holdLimit: 3 }, { position: { epoch: EPOCH, offset: 0 } });
  for (let n = 1; n <= 5; n += 1) feed({ from: "ann", offset: n }, say(`m${n}`));
  assert.equal(client.stats.unhandled, 5);
  assert.equal(client.position, `${EPOCH}:5`);
});
